/*
 * The stimulus of tests/test_kernel_differential.py: real module and exec syscalls made
 * by a task with a chosen login uid and uid. It shares no code with kmod_audit (syscall
 * numbers come from the kernel's tables). On x86_64 one build makes the calls of both
 * ABIs (b32 through int 0x80); elsewhere a build makes its own ABI's (NATIVE): on arm64
 * an AArch64 build the b64 calls and a static armhf build, run in compat mode, the b32
 * ones (tests/_differential.py builds them).
 *
 * Usage: stimulus AUID UID MODE KMOD
 *   AUID  the login uid to write to /proc/self/loginuid ("keep" to leave it)
 *   UID   0, or the uid (and gid) to become
 *   MODE  calls     every module syscall (create, init, delete, query, finit, where
 *                   the ABI has them; all fail here) and failing execs of KMOD (EFAULT:
 *                   bad argv, E2BIG: an argument over MAX_ARG_STRLEN), execve/execveat
 *         exec64 | exec64at | exec32 | exec32at   one successful exec of `KMOD --version`
 *                   (exec32* on x86_64 or a 32-bit build, exec64* on a 64-bit one)
 *         calls-in-place   the module syscalls of `calls`, made by this process itself
 *                   after it set its login uid and uid (a task whose ids changed after
 *                   fork, as a setuid program's: task rules saw the ids at fork)
 *
 * Otherwise the work runs in a child forked *after* the login uid and uid are set, as a
 * login session's processes are (task rules are matched at fork). Each syscall is reported
 * on stdout as "PID ABI NR RESULT"; a successful exec is reported as "PID ABI NR 0"
 * before it is made and confirmed by "exit PID 0" (the exec'd kmod exited 0); when
 * it fails, the child prints "PID ABI NR -ERRNO" on stderr and exits 3.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* The ABI of this build's own syscalls: on x86_64 the b32 ones go through int 0x80 from the
 * same program; elsewhere a 32-bit build (armhf, run on arm64 in compat mode) makes them. */
#if defined(__LP64__)
#define NATIVE "b64"
#else
#define NATIVE "b32"
#endif

#if defined(__x86_64__)
/* i386 numbers, from the kernel's arch/x86/entry/syscalls/syscall_32.tbl (the uapi
 * header asm/unistd_32.h cannot be included beside the native asm/unistd_64.h). */
enum {
    NR32_EXECVE = 11,
    NR32_CREATE_MODULE = 127,
    NR32_INIT_MODULE = 128,
    NR32_DELETE_MODULE = 129,
    NR32_QUERY_MODULE = 167,
    NR32_FINIT_MODULE = 350,
    NR32_EXECVEAT = 358,
};

static char *low; /* memory below 4 GiB for the pointer arguments of 32-bit calls */
static size_t low_used;

static uint32_t low_put(const void *data, size_t size) {
    size_t start = (low_used + 7) & ~(size_t)7;
    memcpy(low + start, data, size);
    low_used = start + size;
    return (uint32_t)(uintptr_t)(low + start);
}

static uint32_t low_string(const char *text) { return low_put(text, strlen(text) + 1); }

/* An i386 syscall through int 0x80 (IA32 emulation); returns the result or -errno. */
static long sys32(long nr, uint32_t a, uint32_t b, uint32_t c, uint32_t d, uint32_t e) {
    uint32_t ret;
    __asm__ volatile("int $0x80"
                     : "=a"(ret)
                     : "a"((uint32_t)nr), "b"(a), "c"(b), "d"(c), "S"(d), "D"(e)
                     : "memory", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15");
    return (int32_t)ret;
}

#endif

static long sys64(long nr, long a, long b, long c, long d, long e) {
    long ret = syscall(nr, a, b, c, d, e);
    return ret == -1 ? -errno : ret;
}

static void report(const char *abi, long nr, long result) {
    printf("%d %s %ld %ld\n", (int)getpid(), abi, nr, result);
    fflush(stdout);
}

static void module_calls(void) {
    static const char image[] = "not an ELF image";
    static const char name[] = "kmod_audit_missing";
#ifdef SYS_create_module
    report(NATIVE, SYS_create_module, sys64(SYS_create_module, (long)name, 0, 0, 0, 0));
#endif
    report(NATIVE, SYS_init_module, sys64(SYS_init_module, (long)image, sizeof image, (long)"", 0, 0));
    report(NATIVE, SYS_delete_module, sys64(SYS_delete_module, (long)name, O_NONBLOCK, 0, 0, 0));
#ifdef SYS_query_module
    report(NATIVE, SYS_query_module, sys64(SYS_query_module, (long)name, 0, 0, 0, 0));
#endif
    report(NATIVE, SYS_finit_module, sys64(SYS_finit_module, -1, (long)"", 0, 0, 0));
#if defined(__x86_64__)
    uint32_t image32 = low_put(image, sizeof image), name32 = low_string(name);
    uint32_t empty32 = low_string("");
    report("b32", NR32_CREATE_MODULE, sys32(NR32_CREATE_MODULE, name32, 0, 0, 0, 0));
    report("b32", NR32_INIT_MODULE, sys32(NR32_INIT_MODULE, image32, sizeof image, empty32, 0, 0));
    report("b32", NR32_DELETE_MODULE, sys32(NR32_DELETE_MODULE, name32, O_NONBLOCK, 0, 0, 0));
    report("b32", NR32_QUERY_MODULE, sys32(NR32_QUERY_MODULE, name32, 0, 0, 0, 0));
    report("b32", NR32_FINIT_MODULE, sys32(NR32_FINIT_MODULE, 0xffffffffu, empty32, 0, 0, 0));
#endif
}

/* argv for an exec: "bad" is an invalid pointer (EFAULT), "big" one string over
 * MAX_ARG_STRLEN (E2BIG), "ok" is `kmod --version`. Both fail after the file is opened on
 * a kernel that opens it first (6.8 on), before it on one that copies argv first (5.9 to
 * 6.7, such as Debian 12's 6.1). */
static char *big_argument(void) {
    static char *big;
    if (big == NULL) {
        size_t size = 33 * 4096 + 1;
        big = malloc(size);
        memset(big, 'x', size - 1);
        big[size - 1] = 0;
    }
    return big;
}

static long exec64(long nr, const char *path, const char *how) {
    char *ok[] = {"kmod", "--version", NULL};
    char *big[] = {"kmod", big_argument(), NULL};
    char *envp[] = {NULL};
    long argv = strcmp(how, "bad") == 0 ? 1 : (long)(strcmp(how, "big") == 0 ? big : ok);
    if (nr == SYS_execve) return sys64(nr, (long)path, argv, (long)envp, 0, 0);
    return sys64(nr, AT_FDCWD, (long)path, argv, (long)envp, 0);
}

#if defined(__x86_64__)
static long exec32(long nr, const char *path, const char *how) {
    uint32_t path32 = low_string(path);
    uint32_t ok[] = {low_string("kmod"), low_string("--version"), 0};
    uint32_t big[] = {low_string("kmod"), 0, 0};
    uint32_t envp[] = {0};
    uint32_t argv;
    if (strcmp(how, "bad") == 0) {
        argv = 1;
    } else if (strcmp(how, "big") == 0) {
        big[1] = low_string(big_argument());
        argv = low_put(big, sizeof big);
    } else {
        argv = low_put(ok, sizeof ok);
    }
    uint32_t envp32 = low_put(envp, sizeof envp);
    if (nr == NR32_EXECVE) return sys32(nr, path32, argv, envp32, 0, 0);
    return sys32(nr, (uint32_t)AT_FDCWD, path32, argv, envp32, 0);
}

#endif

static void failing_execs(const char *kmod) {
    static const char *hows[] = {"bad", "big"};
    for (int i = 0; i < 2; i++) {
        report(NATIVE, SYS_execve, exec64(SYS_execve, kmod, hows[i]));
        report(NATIVE, SYS_execveat, exec64(SYS_execveat, kmod, hows[i]));
#if defined(__x86_64__)
        report("b32", NR32_EXECVE, exec32(NR32_EXECVE, kmod, hows[i]));
        report("b32", NR32_EXECVEAT, exec32(NR32_EXECVEAT, kmod, hows[i]));
#endif
    }
}

static void successful_exec(const char *mode, const char *kmod) {
    int null = open("/dev/null", O_WRONLY);
    long result;
    /* This build's own ABI: exec64/exec64at on a 64-bit one, exec32/exec32at on a 32-bit one. */
    if (strncmp(mode + 4, NATIVE + 1, 2) == 0) {
        long nr = strcmp(mode + 6, "at") == 0 ? SYS_execveat : SYS_execve;
        report(NATIVE, nr, 0);
        dup2(null, 1);
        result = exec64(nr, kmod, "ok");
        dprintf(2, "%d %s %ld %ld\n", (int)getpid(), NATIVE, nr, result);
    } else {
#if defined(__x86_64__)
        long nr = strcmp(mode, "exec32") == 0 ? NR32_EXECVE : NR32_EXECVEAT;
        report("b32", nr, 0);
        dup2(null, 1);
        result = exec32(nr, kmod, "ok");
        dprintf(2, "%d b32 %ld %ld\n", (int)getpid(), nr, result);
#else
        dprintf(2, "mode %s: this build makes only %s calls\n", mode, NATIVE);
#endif
    }
    _exit(3);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: stimulus AUID UID MODE KMOD\n");
        return 2;
    }
    const char *auid = argv[1], *mode = argv[3], *kmod = argv[4];
    unsigned long uid = strtoul(argv[2], NULL, 10);
    if (strcmp(auid, "keep") != 0) {
        int fd = open("/proc/self/loginuid", O_WRONLY);
        if (fd < 0 || write(fd, auid, strlen(auid)) != (ssize_t)strlen(auid)) {
            perror("cannot write /proc/self/loginuid");
            return 2;
        }
        close(fd);
    }
    if (uid != 0) {
        if (setgroups(0, NULL) || setresgid(uid, uid, uid) || setresuid(uid, uid, uid)) {
            perror("cannot become the user");
            return 2;
        }
    }
#if defined(__x86_64__)
    low = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT,
               -1, 0);
    if (low == MAP_FAILED) {
        perror("mmap MAP_32BIT");
        return 2;
    }
#endif
    if (strcmp(mode, "calls-in-place") == 0) {
        module_calls();
        return 0;
    }
    pid_t child = fork();
    if (child < 0) {
        perror("fork");
        return 2;
    }
    if (child == 0) {
        if (strcmp(mode, "calls") == 0) {
            module_calls();
            failing_execs(kmod);
            _exit(0);
        }
        successful_exec(mode, kmod);
    }
    int status;
    if (waitpid(child, &status, 0) != child) {
        perror("waitpid");
        return 2;
    }
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    printf("exit %d %d\n", (int)child, code);
    return 0;
}
