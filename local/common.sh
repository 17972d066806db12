# Shared settings of the local development servers (sourced, not run).
# One PostgreSQL and one OpenBao dev server per machine, on loopback only.
PGCREDS_LOCAL_DIR=${PGCREDS_LOCAL_DIR:-/var/tmp/pg-dynamic-creds}
PGCREDS_PG_PORT=${PGCREDS_PG_PORT:-55432}
PGCREDS_BAO_PORT=${PGCREDS_BAO_PORT:-58200}
log() { printf '[local %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# The command line every server script shares; it defines start, stop, running and env_.
dispatch() {
  case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) if running; then echo running; else echo stopped; exit 1; fi ;;
    env) env_ ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
  esac
}
