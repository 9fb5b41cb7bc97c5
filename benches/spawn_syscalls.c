// What the system calls clusterd makes before each spawn cost on this machine, hot, in a loop:
// the worker channel's socketpair, the two output pipes, and opening the instance's cgroup
// directory (for clone3's CLONE_INTO_CGROUP); then closing the seven descriptors.
//
// Build: gcc -O2 -o spawn_syscalls benches/spawn_syscalls.c
// Usage: spawn_syscalls CGROUP_DIRECTORY (any directory of the cgroup2 hierarchy)
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double micros(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    enum { ROUNDS = 2000 };
    double pair = 0, pipes = 0, open_dir = 0, closes = 0;
    for (int i = 0; i < ROUNDS; i++) {
        int channel[2], out[2], err[2];
        double a = micros();
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, channel)) return 1;
        double b = micros();
        if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) return 1;
        double c = micros();
        int cgroup = open(argv[1], O_RDONLY | O_CLOEXEC | O_DIRECTORY);
        if (cgroup < 0) return 1;
        double d = micros();
        int fds[] = {channel[0], channel[1], out[0], out[1], err[0], err[1], cgroup};
        for (int j = 0; j < 7; j++) close(fds[j]);
        double e = micros();
        pair += b - a, pipes += c - b, open_dir += d - c, closes += e - d;
    }
    printf("socketpair %.2f µs, two pipe2 %.2f µs, openat of the cgroup %.2f µs, "
           "seven closes %.2f µs (mean of %d rounds)\n",
           pair / ROUNDS, pipes / ROUNDS, open_dir / ROUNDS, closes / ROUNDS, ROUNDS);
    return 0;
}
