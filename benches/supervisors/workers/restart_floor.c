// The floor of "restart after SIGKILL" on this machine, as the supervisors bench measures it
// for every supervisor: a minimal C supervisor (sigwaitinfo on SIGCHLD, waitpid, fork+exec of
// the stamp worker), with no unit files, no logging, no cgroups, no worker channel.
//
// Usage: restart_floor STAMP_WORKER STAMP_FILE N
// STAMP_WORKER appends "<pid> <CLOCK_REALTIME ns>" to STAMP_FILE as its first action. Prints
// one latency in ms per line: the replacement's own stamp minus the time just before kill(2).
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static pid_t start(const char *worker, const char *file, sigset_t *blocked) {
    pid_t c = fork();
    if (c == 0) {
        sigprocmask(SIG_UNBLOCK, blocked, 0);
        execl(worker, worker, file, (char *)0);
        _exit(127);
    }
    return c;
}

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    const char *worker = argv[1], *file = argv[2];
    int n = atoi(argv[3]);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGCHLD);
    sigprocmask(SIG_BLOCK, &s, 0);
    unlink(file);
    pid_t c = start(worker, file, &s);
    usleep(100000);
    long long *killed_at = calloc(n, sizeof *killed_at);
    for (int i = 0; i < n; i++) {
        killed_at[i] = now();
        kill(c, SIGKILL);
        siginfo_t si;
        sigwaitinfo(&s, &si);
        while (waitpid(-1, 0, WNOHANG) > 0) {}
        c = start(worker, file, &s);
        usleep(50000); /* the bench's pause between kills */
    }
    kill(c, SIGKILL);
    waitpid(c, 0, 0);
    FILE *f = fopen(file, "r");
    if (!f) return 1;
    long long ts;
    int pid, k = -1;
    while (fscanf(f, "%d %lld", &pid, &ts) == 2) {
        if (k >= 0 && k < n) printf("%.4f\n", (ts - killed_at[k]) / 1e6);
        k++;
    }
    return 0;
}
