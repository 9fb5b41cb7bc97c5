// The log benchmark's writer: waits until the file GO exists, then writes TOTAL bytes of
// 100-byte lines to stdout in 64 000-byte writes as fast as it can, then "done\n", then
// waits (so that no supervisor restarts it meanwhile).
//
// Usage: log_writer TOTAL GO
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    long total = atol(argv[1]);
    while (access(argv[2], F_OK) != 0) usleep(500);
    static char block[64000];
    for (int i = 0; i < 640; i++) {
        memset(block + i * 100, 'x', 99);
        block[i * 100 + 99] = '\n';
    }
    long written = 0;
    while (written < total) {
        ssize_t n = write(1, block, sizeof block);
        if (n <= 0) return 1;
        written += n;
    }
    if (write(1, "done\n", 5) != 5) return 1;
    for (;;) pause();
}
