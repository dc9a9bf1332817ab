# Sourced by the launch scripts.

show() {  # the command as one line a shell would take back
  local a out="+"
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=,@%+^-]+$ ]]; then out+=" $a"; else out+=" $(printf %q "$a")"; fi
  done
  echo "$out"
}
