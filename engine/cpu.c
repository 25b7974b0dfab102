/* cpu.c: which instruction sets the kernels may use: cpuid (with the OS's
 * consent: XCR0 for the AVX-512 state, arch_prctl for the AMX tiles), capped
 * by the environment variable IMGCLASS_MAX_ISA so that the paths of a lesser
 * CPU can be run and tested on this one (as oneDNN's ONEDNN_MAX_CPU_ISA).
 *
 * Compiled without ISA flags, unlike the kernel files: the probes run on any
 * x86-64, before anyone knows what the CPU has. */
#include "engine_impl.h"

#include <cpuid.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static const char *const isa_names[] = {"avx2", "avx512", "avx512_vnni", "amx"};

static struct {
    enum eng_isa have; /* the best level this CPU and OS give, uncapped */
    enum eng_isa cap;  /* IMGCLASS_MAX_ISA, or ENG_ISA_AMX when unset */
    char why[4][160];  /* [level]: why that level is out of reach, "" when it is not */
} cpu;
static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;

static void cpu_probe(void) {
    __builtin_cpu_init();
    /* libgcc's answers include the OS check (XCR0 saves the zmm state) */
    const bool avx512 = __builtin_cpu_supports("avx512f"), bw = __builtin_cpu_supports("avx512bw"),
               vnni = __builtin_cpu_supports("avx512vnni");
    unsigned a = 0, b = 0, c = 0, d = 0;
    const bool leaf7 = __get_cpuid_count(7, 0, &a, &b, &c, &d);
    const bool tile = leaf7 && (d & (1u << 24)), amx8 = leaf7 && (d & (1u << 25));
    cpu.have = ENG_ISA_AVX2;
    if (!avx512) {
        snprintf(cpu.why[ENG_ISA_AVX512], sizeof cpu.why[0], "this CPU (or OS) has no AVX-512F");
    } else {
        cpu.have = ENG_ISA_AVX512;
        if (!bw || !vnni) {
            snprintf(cpu.why[ENG_ISA_AVX512_VNNI], sizeof cpu.why[0],
                     "this CPU has no %s", !vnni ? "AVX-512 VNNI (avx512_vnni)" : "AVX-512BW");
        } else {
            cpu.have = ENG_ISA_AVX512_VNNI;
            if (!tile || !amx8)
                snprintf(cpu.why[ENG_ISA_AMX], sizeof cpu.why[0],
                         "this CPU has no AMX-INT8 (cpuid amx_tile, amx_int8)");
            /* Linux hands the 8 KB tile state only to processes that ask */
            else if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0)
                snprintf(cpu.why[ENG_ISA_AMX], sizeof cpu.why[0],
                         "Linux refused the AMX tile state (arch_prctl XTILEDATA)");
            else
                cpu.have = ENG_ISA_AMX;
        }
    }
    /* a level out of reach takes the levels above it along */
    for (int l = ENG_ISA_AVX512 + 1; l <= ENG_ISA_AMX; l++)
        if (!cpu.why[l][0] && cpu.why[l - 1][0]) memcpy(cpu.why[l], cpu.why[l - 1], sizeof cpu.why[0]);
    cpu.cap = ENG_ISA_AMX;
    const char *env = getenv("IMGCLASS_MAX_ISA");
    if (env && *env) {
        /* an unknown value caps at the baseline: a typo must not run the
         * paths it was meant to keep out */
        cpu.cap = ENG_ISA_AVX2;
        for (int l = ENG_ISA_AVX2; l <= ENG_ISA_AMX; l++)
            if (!strcmp(env, isa_names[l])) cpu.cap = (enum eng_isa)l;
        for (int l = cpu.cap + 1; l <= ENG_ISA_AMX; l++)
            if (!cpu.why[l][0])
                snprintf(cpu.why[l], sizeof cpu.why[0], "IMGCLASS_MAX_ISA=%.40s keeps %s out", env,
                         isa_names[l]);
    }
}

bool eng_isa_available(enum eng_isa isa, const char **why) {
    pthread_once(&cpu_once, cpu_probe);
    const bool ok = isa <= cpu.have && isa <= cpu.cap;
    if (why) *why = ok ? "" : cpu.why[isa];
    return ok;
}

bool eng_avx512_available(void) {
    return eng_isa_available(ENG_ISA_AVX512, NULL);
}

bool eng_vnni_available(void) {
    return eng_isa_available(ENG_ISA_AVX512_VNNI, NULL);
}

bool eng_amx_available(void) {
    return eng_isa_available(ENG_ISA_AMX, NULL);
}
