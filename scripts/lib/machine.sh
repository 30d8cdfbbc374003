# Sourced by the bench scripts: say which machine the figures are from (absolute times are
# this machine's; compare ratios across machines).
machine() {
  echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB, $(date -u +%FT%TZ)"
}
