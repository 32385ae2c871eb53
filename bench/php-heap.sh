#!/bin/sh
# What tracing PHP's own heap costs: bench/workload/php_heap.php (a loop of PHP work on the
# Zend heap) untraced, traced with --heap malloc (the C heap only), and traced with both
# heaps (the default), in alternating rounds; prints each mode's median ns per iteration and
# the ratios. Needs root, php-cli and a built leaktrace (LEAKTRACE, default
# target/release/leaktrace). Usage: bench/php-heap.sh [ROUNDS [N]]
set -eu
cd "$(dirname "$0")/.."
leaktrace=${LEAKTRACE:-target/release/leaktrace}
rounds=${1:-5}
n=${2:-200000}
script=bench/workload/php_heap.php
. bench/median.sh
ns() { grep '^ns_per_iter' | awk '{ print $3 }'; }
off=$(mktemp); malloc=$(mktemp); both=$(mktemp)
i=0
while [ "$i" -lt "$rounds" ]; do
    php "$script" "$n" | ns >>"$off"
    "$leaktrace" --heap malloc -- php "$script" "$n" 2>/dev/null | ns >>"$malloc"
    "$leaktrace" -- php "$script" "$n" 2>/dev/null | ns >>"$both"
    i=$((i + 1))
done
o=$(median <"$off"); m=$(median <"$malloc"); b=$(median <"$both")
echo "untraced $o ns, traced --heap malloc $m ns, traced both heaps $b ns per iteration;" \
    "both heaps / untraced $(echo "scale=2; $b / $o" | bc)x, both heaps / --heap malloc $(echo "scale=2; $b / $m" | bc)x"
rm -f "$off" "$malloc" "$both"
