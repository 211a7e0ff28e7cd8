/* cpuidmask: run a program as if its x86 CPU lacked AVX-512, VNNI and AMX.
 *
 * onnxruntime (MLAS), oneDNN/OpenVINO and numpy choose their kernels from what the CPUID
 * instruction reports. Linux can make CPUID fault in user space on CPUs with CPUID
 * faulting (`cpuid_fault` in /proc/cpuinfo; arch_prctl ARCH_SET_CPUID). This LD_PRELOAD
 * library turns that on at load time, answers each faulting CPUID itself (the real
 * answer with the masked feature bits cleared) and resumes after the instruction. The
 * program then runs the kernels of the weaker class natively: the same instructions and
 * integers as on such a CPU, at this core's speed for them.
 *
 * CPUIDMASK=avx2   (default) hide AVX-512 (all of it), AVX-VNNI and AMX: a Haswell..Zen 3
 * CPUIDMASK=avx512 hide only the VNNI and AMX instructions: a Skylake-X / Cascade Lake
 *                  client without VNNI
 * The setting is inherited by threads and forks; execve resets it, and the library is
 * loaded again by a child that inherits LD_PRELOAD, so subprocesses are masked too.
 *
 * The program's own SIGSEGV handlers (Python's faulthandler, for one) are kept aside
 * and called for every fault that is not a CPUID, so they work as before.
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#ifndef ARCH_GET_CPUID
#define ARCH_GET_CPUID 0x1011
#define ARCH_SET_CPUID 0x1012
#endif

typedef int (*sigaction_fn)(int, const struct sigaction *, struct sigaction *);

static sigaction_fn real_sigaction;
static struct sigaction chained; /* the program's SIGSEGV handler, called for other faults */
static int hide_avx512;          /* 1 for avx2, 0 for avx512 */
static int active;

static long set_cpuid(int enabled) { return syscall(SYS_arch_prctl, ARCH_SET_CPUID, enabled); }

static void mask(unsigned leaf, unsigned sub, unsigned *a, unsigned *b, unsigned *c, unsigned *d)
{
    if (leaf == 7 && sub == 0) {
        if (hide_avx512) {
            /* EBX: AVX512F 16, DQ 17, IFMA 21, PF 26, ER 27, CD 28, BW 30, VL 31 */
            *b &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) |
                    (1u << 28) | (1u << 30) | (1u << 31));
            /* ECX: VBMI 1, VBMI2 6, BITALG 12, VPOPCNTDQ 14 */
            *c &= ~((1u << 1) | (1u << 6) | (1u << 12) | (1u << 14));
            /* EDX: 4VNNIW 2, 4FMAPS 3, VP2INTERSECT 8, FP16 23 */
            *d &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 23));
        }
        *c &= ~(1u << 11);                                 /* AVX512_VNNI */
        *d &= ~((1u << 22) | (1u << 24) | (1u << 25));     /* AMX BF16, TILE, INT8 */
    } else if (leaf == 7 && sub == 1) {
        /* EAX: AVX_VNNI 4, AVX512_BF16 5, AVX_IFMA 23; EDX: AVX_VNNI_INT8 4, NE_CONVERT 5,
           AVX_VNNI_INT16 10, AVX10 19 */
        *a &= ~((1u << 4) | (1u << 23) | (hide_avx512 ? (1u << 5) : 0));
        *d &= ~((1u << 4) | (1u << 5) | (1u << 10) | (1u << 19));
    } else if (leaf == 0x1d || leaf == 0x1e || leaf == 0x24) {
        *a = *b = *c = *d = 0; /* AMX palettes, TMUL, AVX10 details */
    }
}

static void on_segv(int sig, siginfo_t *info, void *context)
{
    ucontext_t *uc = context;
    greg_t *r = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)r[REG_RIP];
    if (info->si_code == SI_KERNEL && ip[0] == 0x0f && ip[1] == 0xa2) {
        unsigned leaf = (unsigned)r[REG_RAX], sub = (unsigned)r[REG_RCX], a, b, c, d;
        set_cpuid(1);
        __cpuid_count(leaf, sub, a, b, c, d);
        set_cpuid(0);
        mask(leaf, sub, &a, &b, &c, &d);
        r[REG_RAX] = a;
        r[REG_RBX] = b;
        r[REG_RCX] = c;
        r[REG_RDX] = d;
        r[REG_RIP] += 2;
        return;
    }
    if (chained.sa_flags & SA_SIGINFO) {
        chained.sa_sigaction(sig, info, context);
    } else if (chained.sa_handler != SIG_DFL && chained.sa_handler != SIG_IGN) {
        chained.sa_handler(sig);
    } else { /* default action: the fault repeats on return and ends the process */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        real_sigaction(SIGSEGV, &dfl, NULL);
    }
}

/* Keep the program's SIGSEGV handler aside instead of letting it replace ours. */
int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    if (!real_sigaction)
        real_sigaction = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    if (sig != SIGSEGV || !active)
        return real_sigaction(sig, act, old);
    if (old)
        *old = chained;
    if (act)
        chained = *act;
    return 0;
}

sighandler_t signal(int sig, sighandler_t handler)
{
    struct sigaction act, old;
    memset(&act, 0, sizeof act);
    act.sa_handler = handler;
    act.sa_flags = SA_RESTART;
    if (sigaction(sig, &act, &old) < 0)
        return SIG_ERR;
    return old.sa_handler;
}

__attribute__((constructor)) static void start(void)
{
    const char *mode = getenv("CPUIDMASK");
    if (!mode || !*mode || !strcmp(mode, "avx2"))
        hide_avx512 = 1;
    else if (!strcmp(mode, "avx512"))
        hide_avx512 = 0;
    else {
        fprintf(stderr, "cpuidmask: CPUIDMASK=%s: expected avx2 or avx512\n", mode);
        _exit(2);
    }
    real_sigaction = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    struct sigaction act;
    memset(&act, 0, sizeof act);
    act.sa_sigaction = on_segv;
    act.sa_flags = SA_SIGINFO | SA_NODEFER;
    chained.sa_handler = SIG_DFL;
    if (real_sigaction(SIGSEGV, &act, NULL) < 0 || set_cpuid(0) < 0) {
        fprintf(stderr, "cpuidmask: this CPU or kernel cannot make CPUID fault "
                        "(no cpuid_fault in /proc/cpuinfo): nothing is masked\n");
        _exit(3);
    }
    active = 1;
}
