/* The sandbox probe of tests/e2e/run.rs: reports, one `name=result` line each (`ok` or the
 * errno name), what the sandbox lets this process do. Built with `gcc -static` by the test. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <linux/perf_event.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif

static const char *name_of(int e) {
    switch (e) {
    case EPERM: return "EPERM";
    case ENOSYS: return "ENOSYS";
    case EACCES: return "EACCES";
    case EINVAL: return "EINVAL";
    case ENOENT: return "ENOENT";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case ENODEV: return "ENODEV";
    case EFAULT: return "EFAULT";
    default: {
        static char buf[32];
        snprintf(buf, sizeof buf, "errno%d", e);
        return buf;
    }
    }
}

static void report(const char *what, long r) {
    if (r < 0)
        printf("%s=%s\n", what, name_of(errno));
    else
        printf("%s=ok\n", what);
    fflush(stdout);
}

/* Runs `f` in a child (fork), so namespace changes stay there; the child's result is reported. */
static void in_child(const char *what, int (*f)(void)) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        errno = 0;
        int r = f();
        report(what, r);
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
}

static int userns(void) { return unshare(CLONE_NEWUSER); }
static int userns_mount(void) {
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0) return -1;
    return mount("none", "/tmp", "tmpfs", 0, NULL);
}
static int direct_mount(void) {
    if (unshare(CLONE_NEWNS) < 0) return -1;
    return mount("none", "/tmp", "tmpfs", 0, NULL);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    in_child("unshare_user", userns);
    in_child("userns_mount", userns_mount);
    in_child("mount", direct_mount);

    report("add_key", syscall(SYS_add_key, "user", "kiln-probe", "x", 1, -2 /* process keyring */));
    report("keyctl", syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3 /* session */, 0));

    struct perf_event_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.type = PERF_TYPE_SOFTWARE;
    attr.size = sizeof attr;
    attr.config = PERF_COUNT_SW_TASK_CLOCK;
    attr.disabled = 1;
    attr.exclude_kernel = 1;
    attr.exclude_hv = 1;
    report("perf_event_open", syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0));

    report("personality_query", personality(0xffffffff));
    report("personality_linux32", personality(PER_LINUX32));
    personality(PER_LINUX);
    report("personality_no_randomize", personality(ADDR_NO_RANDOMIZE));
    personality(PER_LINUX);

    struct io_uring_params params;
    memset(&params, 0, sizeof params);
    report("io_uring_setup", syscall(SYS_io_uring_setup, 1, &params));

    report("vsock", socket(AF_VSOCK, SOCK_STREAM, 0));
    report("inet", socket(AF_INET, SOCK_STREAM, 0));
    report("packet", socket(AF_PACKET, SOCK_RAW, htons(0x0003 /* ETH_P_ALL */)));

    /* clone3 with a zero size: EINVAL where it is allowed, ENOSYS where it is not. */
    report("clone3", syscall(SYS_clone3, NULL, 0));
    /* clone with a namespace flag, and without: like fork. */
    fflush(stdout);
    long c = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    if (c == 0) _exit(0);
    if (c > 0) waitpid(c, NULL, 0);
    report("clone_newuser", c);
    c = syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    if (c == 0) _exit(0);
    if (c > 0) waitpid(c, NULL, 0);
    report("clone", c);
    report("fork_exec", system("/bin/true") == 0 ? 0 : -1);
    char seed[16];
    report("getrandom", syscall(SYS_getrandom, seed, sizeof seed, 0));
    return 0;
}
