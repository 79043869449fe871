# Sourced by scripts/analysis/*.sh after their arguments are read: `-h` / `--help` prints the calling script's
# header comment, and `need PATH WHY` stops before any work when an input is missing, saying what makes it.
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
need() { [ -e "$1" ] || { echo "$(basename "$0"): $1 is missing: $2 (--help: the arguments)" >&2; exit 2; }; }
