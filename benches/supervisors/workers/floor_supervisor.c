// The restart floor measured exactly as the supervisors are: a minimal C supervisor in a
// process of its own (sigwaitinfo on SIGCHLD, waitpid, fork+exec of the stamp worker), whose
// workers the bench kills and times the way it does every supervisor's. restart_floor.c
// kills its own worker and is already on the CPU when the SIGCHLD comes; a supervisor woken
// by someone else's kill is not, and this floor pays that too.
//
// Usage: floor_supervisor STAMP_WORKER STAMP_FILE N
// Starts N workers and replaces each one that exits; on SIGTERM, kills them and exits.
#define _GNU_SOURCE
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

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
    int n = atoi(argv[3]);
    if (n < 1) return 2;
    pid_t *workers = calloc(n, sizeof *workers);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGCHLD);
    sigaddset(&s, SIGTERM);
    sigprocmask(SIG_BLOCK, &s, 0);
    for (int i = 0; i < n; i++) workers[i] = start(argv[1], argv[2], &s);
    for (;;) {
        siginfo_t si;
        if (sigwaitinfo(&s, &si) == SIGTERM) break;
        pid_t dead;
        while ((dead = waitpid(-1, 0, WNOHANG)) > 0)
            for (int i = 0; i < n; i++)
                if (workers[i] == dead) workers[i] = start(argv[1], argv[2], &s);
    }
    for (int i = 0; i < n; i++) kill(workers[i], SIGKILL);
    while (waitpid(-1, 0, 0) > 0) {}
    return 0;
}
