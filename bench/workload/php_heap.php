<?php
// The cost of tracing PHP's own heap: a loop of plain PHP work whose values live on the
// Zend heap (a string from str_repeat and a two-element array per iteration, each freed
// when the next replaces it), N times, timed inside PHP.
// Prints `ns_per_iter N NS`.
// Usage: php php_heap.php N

function work(int $n): int
{
    $start = hrtime(true);
    $row = null;
    for ($i = 0; $i < $n; $i++) {
        $text = str_repeat("x", 100 + $i % 50);
        $row = [$i, $text];
    }
    return hrtime(true) - $start;
}

$n = (int) $argv[1];
work(1000); // warm up
printf("ns_per_iter %d %.1f\n", $n, work($n) / $n);
