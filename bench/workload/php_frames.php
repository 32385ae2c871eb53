<?php
// The cost of PHP frames: malloc and free through FFI, N times, with DEPTH frames of PHP
// code on the stack ({main} and DEPTH - 1 calls of descend), timed inside PHP.
// Prints `ns_per_op DEPTH N NS`.
// Usage: php php_frames.php DEPTH N

$libc = FFI::cdef("void *malloc(size_t size); void free(void *p);", "libc.so.6");

function descend(FFI $libc, int $left, int $n): int
{
    if ($left > 1) {
        return descend($libc, $left - 1, $n);
    }
    $start = hrtime(true);
    for ($i = 0; $i < $n; $i++) {
        $libc->free($libc->malloc(64));
    }
    return hrtime(true) - $start;
}

$depth = (int) $argv[1];
$n = (int) $argv[2];
descend($libc, $depth - 1, 1000); // warm up
$ns = $depth > 1 ? descend($libc, $depth - 1, $n) : 0;
printf("ns_per_op %d %d %.1f\n", $depth, $n, $ns / $n);
