// Restart latency of several supervisors already running, compared kill by kill: an A/B
// harness for changes to the restart path, quieter than separate runs of the bench.
//
// Each supervisor runs 10 stamp workers (benches/supervisors/workers/stamp_worker.c) writing
// to a stamp file of its own. The harness kills one worker of the first supervisor, waits for
// its replacement's stamp, then one of the second, and so on in turn, polling each stamp file
// every 200 us and pausing 50 ms after each kill, exactly as `cargo bench --bench supervisors`
// does; so every supervisor meets the same moments of the machine. It prints each one's p50,
// p25 and p75 (ms, replacement's stamp minus the time just before kill(2)) and the ratio of
// each p50 to the last file's.
//
// It kills only what a stamp file names, so it trusts no stamp file it did not make: each
// must be a regular file (not a link) owned by whoever runs the harness and writable by
// nobody else, and a pid is killed only if that process was started with the stamp file's
// path as an argument (as the stamp worker is), so a line someone planted cannot make it
// kill another process.
//
// Build: gcc -O2 -o restart_ab benches/restart_ab.c
// Usage: restart_ab KILLS STAMP_FILE... (the last one is the reference, e.g. the minimal C
// supervisor: benches/supervisors/workers/floor_supervisor.c STAMP_WORKER STAMP_FILE 10).
// Each STAMP_FILE spelled as its workers were given it.
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_FILES 8
#define MAX_STAMPS 400000
#define MAX_KILLS 10000

struct stamps {
    const char *path;
    off_t offset;
    int n;
    int pid[MAX_STAMPS];
    long long at[MAX_STAMPS];
    int live[10];
};

static long long now(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

// Reads the complete lines appended since the last call.
static void poll_stamps(struct stamps *s) {
    int fd = open(s->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return;
    for (;;) {
        char buf[65536];
        if (lseek(fd, s->offset, SEEK_SET) < 0) break;
        ssize_t r = read(fd, buf, sizeof buf - 1);
        if (r <= 0) break;
        buf[r] = 0;
        char *last = strrchr(buf, '\n');
        if (!last) break;
        *last = 0;
        s->offset += (last - buf) + 1;
        for (char *line = buf; line;) {
            char *next = strchr(line, '\n');
            if (next) *next++ = 0;
            int pid;
            long long at;
            if (s->n < MAX_STAMPS && sscanf(line, "%d %lld", &pid, &at) == 2) {
                s->pid[s->n] = pid;
                s->at[s->n] = at;
                s->n++;
            }
            line = next;
        }
    }
    close(fd);
}

// The stamp file may be trusted: a regular file of ours that nobody else may write.
static int trusted(const char *path) {
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 || fstat(fd, &st) != 0) {
        if (fd >= 0) close(fd);
        return 0;
    }
    close(fd);
    return S_ISREG(st.st_mode) && st.st_uid == geteuid() && !(st.st_mode & (S_IWGRP | S_IWOTH));
}

// Whether process `pid` was started with `path` as one of its arguments.
static int started_with(int pid, const char *path) {
    char proc[64], args[65536];
    snprintf(proc, sizeof proc, "/proc/%d/cmdline", pid);
    int fd = open(proc, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, args, sizeof args - 1);
    close(fd);
    if (n <= 0) return 0;
    args[n] = 0;
    for (char *arg = args; arg < args + n; arg += strlen(arg) + 1)
        if (strcmp(arg, path) == 0) return 1;
    return 0;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static struct stamps files[MAX_FILES];
static double latency[MAX_FILES][MAX_KILLS];

int main(int argc, char **argv) {
    if (argc < 3 || argc - 2 > MAX_FILES) {
        fprintf(stderr, "usage: restart_ab KILLS STAMP_FILE... (at most %d files)\n", MAX_FILES);
        return 2;
    }
    int kills = atoi(argv[1]), count = argc - 2;
    if (kills < 1 || kills > MAX_KILLS) return 2;
    for (int f = 0; f < count; f++) {
        files[f].path = argv[2 + f];
        if (!trusted(files[f].path)) {
            fprintf(stderr, "%s: not a regular file of this user's that only it may write\n",
                    files[f].path);
            return 1;
        }
        poll_stamps(&files[f]);
        if (files[f].n < 10) {
            fprintf(stderr, "%s: fewer than 10 stamps\n", files[f].path);
            return 1;
        }
        // The last 10 stamps are the running workers (each replacement appends one).
        for (int i = 0; i < 10; i++) files[f].live[i] = files[f].pid[files[f].n - 10 + i];
    }
    for (int k = 0; k < kills; k++) {
        for (int f = 0; f < count; f++) {
            struct stamps *s = &files[f];
            int slot = k % 10, before = s->n;
            if (!started_with(s->live[slot], s->path)) {
                fprintf(stderr, "%s: pid %d is not a worker writing to it\n", s->path,
                        s->live[slot]);
                return 1;
            }
            long long killed_at = now();
            if (kill(s->live[slot], SIGKILL) != 0) {
                fprintf(stderr, "%s: pid %d is gone\n", s->path, s->live[slot]);
                return 1;
            }
            long long deadline = killed_at + 10000000000LL;
            for (;;) {
                poll_stamps(s);
                if (s->n > before) break;
                if (now() > deadline) {
                    fprintf(stderr, "%s: no replacement for pid %d in 10 s\n", s->path,
                            s->live[slot]);
                    return 1;
                }
                usleep(200);
            }
            latency[f][k] = (s->at[before] - killed_at) / 1e6;
            s->live[slot] = s->pid[before];
            usleep(50000);
        }
    }
    for (int f = 0; f < count; f++) qsort(latency[f], kills, sizeof(double), by_value);
    double reference = latency[count - 1][kills / 2];
    for (int f = 0; f < count; f++)
        printf("%-40s p50 %.3f  p25 %.3f  p75 %.3f  p50 / last %.3f\n", files[f].path,
               latency[f][kills / 2], latency[f][kills / 4], latency[f][3 * kills / 4],
               latency[f][kills / 2] / reference);
    return 0;
}
