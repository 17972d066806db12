#!/usr/bin/env bash
# What destroy.yml runs, once the stack name was typed twice: `pulumi destroy`
# with the program run (--run-program), so that the current settings and the
# lease revokers apply, as the deploy identity.
source "$(dirname "$0")/common.sh"
pulumi_stack destroy --yes --skip-preview --refresh --run-program
