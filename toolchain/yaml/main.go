// pulumi-language-yaml for this toolchain: Pulumi YAML's language host (module
// github.com/pulumi/pulumi-yaml) with its packages loaded through the engine's
// schema loader, so that the CLI starts a package's plugin (a Python component
// provider here) as it starts any other.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/pulumi/pulumi-yaml/pkg/server"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/cmdutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/logging"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
)

func main() {
	tracing := flag.String("tracing", "", "Zipkin-compatible tracing endpoint")
	flag.String("root", "", "root of the program (unused)")
	flag.Parse()
	logging.InitLogging(false, 0, false)
	cmdutil.InitTracing("pulumi-language-yaml", "pulumi-language-yaml", *tracing)

	var engineAddress string
	var cancel chan bool
	if args := flag.Args(); len(args) > 0 {
		engineAddress = args[0]
		cancel = stopWhenEngineGoes(engineAddress)
	}
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Cancel: cancel,
		Init: func(srv *grpc.Server) error {
			// true: the engine's loader (the request's LoaderTarget), not a plugin host of its own.
			host := yamlHost{server.NewLanguageHost(engineAddress, *tracing, true)}
			pulumirpc.RegisterLanguageRuntimeServer(srv, host)
			return nil
		},
	})
	if err != nil {
		cmdutil.Exit(fmt.Errorf("could not start the YAML language host: %w", err))
	}
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		cmdutil.Exit(fmt.Errorf("the YAML language host stopped serving: %w", err))
	}
}

// yamlHost is YAML's language host, and answers `pulumi package add`: a YAML program
// needs nothing but the `packages:` entry that the CLI writes (this module's host
// does not implement Link, and the command then stops before writing it).
type yamlHost struct {
	pulumirpc.LanguageRuntimeServer
}

func (yamlHost) Link(context.Context, *pulumirpc.LinkRequest) (*pulumirpc.LinkResponse, error) {
	return &pulumirpc.LinkResponse{ImportInstructions: "Use its types in `resources:`, e.g. `type: <package>:<Component>`."}, nil
}

// stopWhenEngineGoes closes the returned channel on SIGINT or when the engine stops answering.
func stopWhenEngineGoes(engineAddress string) chan bool {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	done := make(chan bool)
	go func() {
		<-ctx.Done()
		stop()
		close(done)
	}()
	if err := rpcutil.Healthcheck(ctx, engineAddress, 5*time.Minute, stop); err != nil {
		cmdutil.Exit(fmt.Errorf("could not watch the engine: %w", err))
	}
	return done
}
