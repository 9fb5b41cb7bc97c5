// The restart floor with what clusterd gives every instance. Like floor_supervisor.c, a
// minimal C supervisor in a process of its own (sigwaitinfo on SIGCHLD, waitpid, start the
// replacement), which also gives each worker what clusterd gives each instance and nothing
// more: a cgroup of its own (made ahead, the child created in it by clone3's
// CLONE_INTO_CGROUP), its stdout and stderr captured through two pipes that a reader thread
// drains, and a socketpair channel that a second thread watches. No unit files, log files,
// timestamps, control socket or restart limits.
//
// Usage: featured_floor STAMP_WORKER STAMP_FILE N CGROUP_PARENT [cgroup,output,channel]
// (the last argument, for measuring them one by one: which of the three to give; all three
// by default)
// CGROUP_PARENT: a writable directory of the cgroup2 hierarchy. One directory per worker start
// is made in it (the next one ahead) and removed once its worker is gone; on SIGTERM the
// workers are killed and every directory removed.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif

static const char *parent_dir;
static int with_cgroup = 1, with_output = 1, with_channel = 1;

static void cgroup_path(char *buf, size_t len, int slot, int serial) {
    snprintf(buf, len, "%s/w.%d.%d", parent_dir, slot, serial);
}

struct slot {
    pid_t pid;
    int serial; // the running worker's cgroup: w.SLOT.SERIAL; the spare one is SERIAL + 1
    int tidy;   // the previous worker's cgroup to remove and the next spare to make
};

// Like clusterd, off the restart's path: 2 ms after the last start, the previous workers'
// cgroups are removed and the next spares made.
static void tidy(struct slot *slots, int n) {
    char path[4096];
    for (int i = 0; i < n; i++) {
        if (!slots[i].tidy) continue;
        cgroup_path(path, sizeof path, i, slots[i].serial - 1);
        rmdir(path);
        cgroup_path(path, sizeof path, i, slots[i].serial + 1);
        mkdir(path, 0755);
        slots[i].tidy = 0;
    }
}


// Each reader thread drains what its epoll reports and closes what reached end-of-file.
static void *drain(void *arg) {
    int ep = (int)(intptr_t)arg;
    static __thread char buf[65536];
    struct epoll_event ev[64];
    for (;;) {
        int n = epoll_wait(ep, ev, 64, -1);
        for (int i = 0; i < n; i++) {
            int fd = ev[i].data.fd;
            ssize_t r = read(fd, buf, sizeof buf);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                epoll_ctl(ep, EPOLL_CTL_DEL, fd, 0);
                close(fd);
            }
        }
    }
    return 0;
}

static void watch(int ep, int fd) {
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

static int output_epoll, channel_epoll;

static pid_t start(const char *worker, const char *file, sigset_t *blocked, struct slot *s,
                   int index) {
    int channel[2], out[2], err[2];
    char path[4096];
    cgroup_path(path, sizeof path, index, s->serial + 1);
    if (with_channel && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, channel)) return -1;
    if (with_output && (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC))) return -1;
    int cgroup = with_cgroup ? open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = with_cgroup ? CLONE_INTO_CGROUP : 0;
    args.exit_signal = SIGCHLD;
    args.cgroup = with_cgroup ? (uint64_t)cgroup : 0;
    pid_t c = (pid_t)syscall(SYS_clone3, &args, sizeof args);
    if (c == 0) {
        sigprocmask(SIG_UNBLOCK, blocked, 0);
        if (with_output) {
            dup2(out[1], 1);
            dup2(err[1], 2);
        }
        if (with_channel) dup2(channel[1], 3);
        execl(worker, worker, file, (char *)0);
        _exit(127);
    }
    if (with_cgroup) {
        close(cgroup);
        s->serial++;
        s->tidy = 1;
    }
    if (with_output) {
        close(out[1]);
        close(err[1]);
        fcntl(out[0], F_SETFL, O_NONBLOCK);
        fcntl(err[0], F_SETFL, O_NONBLOCK);
        watch(output_epoll, out[0]);
        watch(output_epoll, err[0]);
    }
    if (with_channel) {
        close(channel[1]);
        fcntl(channel[0], F_SETFL, O_NONBLOCK);
        watch(channel_epoll, channel[0]);
    }
    return c;
}

int main(int argc, char **argv) {
    if (argc != 5 && argc != 6) return 2;
    int n = atoi(argv[3]);
    if (n < 1) return 2;
    parent_dir = argv[4];
    if (argc == 6) {
        with_cgroup = strstr(argv[5], "cgroup") != 0;
        with_output = strstr(argv[5], "output") != 0;
        with_channel = strstr(argv[5], "channel") != 0;
    }
    if (with_cgroup && mkdir(parent_dir, 0755) && errno != EEXIST) return 1;
    struct slot *slots = calloc(n, sizeof *slots);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGCHLD);
    sigaddset(&s, SIGTERM);
    sigprocmask(SIG_BLOCK, &s, 0);
    output_epoll = epoll_create1(EPOLL_CLOEXEC);
    channel_epoll = epoll_create1(EPOLL_CLOEXEC);
    pthread_t t;
    pthread_create(&t, 0, drain, (void *)(intptr_t)output_epoll);
    pthread_create(&t, 0, drain, (void *)(intptr_t)channel_epoll);
    char path[4096];
    for (int i = 0; i < n; i++) {
        cgroup_path(path, sizeof path, i, 1);
        if (with_cgroup) mkdir(path, 0755);
        slots[i].pid = start(argv[1], argv[2], &s, &slots[i], i);
    }
    tidy(slots, n);
    int owed = 0;
    for (;;) {
        siginfo_t si;
        struct timespec two_ms = {0, 2000000};
        int sig = sigtimedwait(&s, &si, owed ? &two_ms : 0);
        if (sig < 0) {
            tidy(slots, n);
            owed = 0;
            continue;
        }
        if (sig == SIGTERM) break;
        owed = 1;
        pid_t dead;
        while ((dead = waitpid(-1, 0, WNOHANG)) > 0)
            for (int i = 0; i < n; i++)
                if (slots[i].pid == dead) slots[i].pid = start(argv[1], argv[2], &s, &slots[i], i);
    }
    for (int i = 0; i < n; i++) kill(slots[i].pid, SIGKILL);
    while (waitpid(-1, 0, 0) > 0) {}
    tidy(slots, n);
    for (int i = 0; with_cgroup && i < n; i++) {
        cgroup_path(path, sizeof path, i, slots[i].serial);
        rmdir(path);
        cgroup_path(path, sizeof path, i, slots[i].serial + 1);
        rmdir(path);
    }
    if (with_cgroup) rmdir(parent_dir);
    return 0;
}
