#!/bin/sh
# What PHP frames cost per allocation: bench/workload/php_frames.php (FFI malloc + free with
# DEPTH PHP frames on the stack) untraced, traced with --no-php-frames, and traced with PHP
# frames, in alternating rounds; prints each mode's median ns per malloc+free and the cost
# PHP frames add. Needs root, php-cli and a built leaktrace (LEAKTRACE, default
# target/release/leaktrace). Usage: bench/php-frames.sh [ROUNDS [N]]
set -eu
cd "$(dirname "$0")/.."
leaktrace=${LEAKTRACE:-target/release/leaktrace}
rounds=${1:-5}
n=${2:-200000}
script=bench/workload/php_frames.php
. bench/median.sh
ns() { grep '^ns_per_op' | awk '{ print $4 }'; }
for depth in 5 30; do
    : >/tmp/php-frames-off; : >/tmp/php-frames-native; : >/tmp/php-frames-php
    i=0
    while [ "$i" -lt "$rounds" ]; do
        php "$script" "$depth" "$n" | ns >>/tmp/php-frames-off
        # The C heap only: FFI's own values on PHP's heap would add their probes and walks.
        "$leaktrace" --heap malloc --no-php-frames -- php "$script" "$depth" "$n" 2>/dev/null | ns >>/tmp/php-frames-native
        "$leaktrace" --heap malloc -- php "$script" "$depth" "$n" 2>/dev/null | ns >>/tmp/php-frames-php
        i=$((i + 1))
    done
    off=$(median </tmp/php-frames-off); native=$(median </tmp/php-frames-native); php=$(median </tmp/php-frames-php)
    echo "depth $depth: untraced $off ns, traced --no-php-frames $native ns, traced with PHP frames $php ns per malloc+free;" \
        "PHP frames add $(echo "$php - $native" | bc) ns per allocation ($(echo "scale=2; $php / $native" | bc)x)"
done
rm -f /tmp/php-frames-off /tmp/php-frames-native /tmp/php-frames-php
