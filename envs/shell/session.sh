# The shell environment's persistent bash: run as `bash --noprofile --norc session.sh`.
# Requests "NONCE SPACE COMMAND" arrive NUL-terminated on the socket in $OPENENV_REQUEST_FD and the
# command runs in this shell (eval), so cd, variables, functions and aliases persist. After each one,
# stdout (stderr is merged into it) gets a marker: NUL nonce SPACE "exit-code cwd" NUL (see
# envs/_lib/child.py). The programs a command starts do not inherit the socket. SIGINT interrupts
# the command (its processes die; a loop of builtins is broken out of) and the shell goes on.
__openenv_fd=$OPENENV_REQUEST_FD
unset OPENENV_REQUEST_FD
if [ "$__openenv_fd" != 9 ]; then exec 9<&"$__openenv_fd" {__openenv_fd}<&-; fi  # a fixed number, closed below
if [ -n "$OPENENV_SEED" ]; then RANDOM=$OPENENV_SEED; fi
unset OPENENV_SEED
__openenv_run() { eval "$1" </dev/null 9<&-; }
# Only inside __openenv_run: an interrupt between commands is ignored.
__openenv_trap='[ -n "${FUNCNAME[0]-}" ] && return 130'
trap "$__openenv_trap" INT
while :; do
  IFS= read -r -d '' -u 9 __openenv_cmd
  __openenv_rc=$?
  if [ "$__openenv_rc" -ne 0 ]; then
    # > 128: an interrupt that came after the command had ended; otherwise the socket closed.
    if [ "$__openenv_rc" -gt 128 ]; then continue; fi
    break
  fi
  __openenv_nonce=${__openenv_cmd%% *}
  __openenv_cmd=${__openenv_cmd#* }
  trap "$__openenv_trap" INT  # re-armed each time: a trap that returned during a wait leaves it unset
  __openenv_run "$__openenv_cmd"
  __openenv_rc=$?
  printf '\0%s %d %s\0' "$__openenv_nonce" "$__openenv_rc" "$PWD"
done
