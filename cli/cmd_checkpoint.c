/* `pserv checkpoint`: what a checkpoint directory holds, every section checked, and its trained
 * parameters exported as raw float32 for use outside pserv. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "commands.h"
#include "options.h"
#include "pserv/pserv.h"


/* Reads every tensor (so every section's CRC32C is checked), prints it, writes it to out. */
static int show_tensors(pserv_checkpoint_h ck, unsigned n, FILE *out, const char *export_path)
{
    printf("%10s %12s %14s\n", "tensor", "elements", "L2 norm");
    for (unsigned i = 0; i < n; i++) {
        uint64_t key;
        size_t count;
        pserv_status_t st = pserv_checkpoint_tensor(ck, i, &key, &count);
        float *v = st == PSERV_OK ? malloc(count * sizeof(float)) : NULL;
        if (v == NULL || (st = pserv_checkpoint_read(ck, key, v)) < 0) {
            fprintf(stderr, "pserv checkpoint: %s: %s\n", pserv_strerror(v ? st : PSERV_ERR_NO_MEMORY),
                    pserv_last_error());
            free(v);
            return 1;
        }
        double norm = 0;
        for (size_t k = 0; k < count; k++) norm += (double)v[k] * v[k];
        printf("%10llu %12zu %14.6f\n", (unsigned long long)key, count, sqrt(norm));
        if (out && fwrite(v, sizeof(float), count, out) != count) {
            fprintf(stderr, "pserv checkpoint: cannot write %s\n", export_path);
            free(v);
            return 1;
        }
        free(v);
    }
    return 0;
}

int cmd_checkpoint(int argc, char **argv)
{
    const char *dir = NULL, *export_path = NULL;
    unsigned round = 0;
    const cli_opt_t opts[] = {
        {"dir", CLI_STRING, &dir, "DIR", "the checkpoint directory (required)", NULL, 0},
        {"round", CLI_UINT, &round, "R", "which round (default: the newest complete one)", NULL, 0},
        {"export", CLI_STRING, &export_path, "FILE",
         "write every tensor's parameters to FILE: raw little-endian float32, tensors in key order", NULL, 0},
    };
    cli_result_t r = cli_parse("checkpoint",
                               "Shows a checkpoint (every section checked against its CRC32C) and exports its "
                               "parameters.",
                               opts, ARRAY_LEN(opts), argc, argv);
    if (r != CLI_OK) return r == CLI_HELP ? 0 : 2;
    if (dir == NULL) {
        fprintf(stderr, "pserv checkpoint: --dir DIR is required\n");
        return 2;
    }
    pserv_checkpoint_h ck;
    pserv_status_t st = pserv_checkpoint_open(dir, round, &ck);
    if (st < 0) {
        fprintf(stderr, "pserv checkpoint: %s: %s\n", pserv_strerror(st), pserv_last_error());
        return 1;
    }
    pserv_checkpoint_info_t info = PSERV_CHECKPOINT_INFO_INIT;
    pserv_checkpoint_info(ck, &info);
    printf("round %llu: %u servers, %s mode, %u tensors, %llu bytes\n", (unsigned long long)info.round,
           info.num_servers, info.mode == PSERV_MODE_SYNC ? "sync" : "async", info.num_tensors,
           (unsigned long long)info.bytes);
    FILE *out = export_path ? fopen(export_path, "wb") : NULL;
    int rc = 1;
    if (export_path && out == NULL) fprintf(stderr, "pserv checkpoint: cannot create %s\n", export_path);
    else rc = show_tensors(ck, info.num_tensors, out, export_path);
    if (out && fclose(out) != 0 && rc == 0) {
        fprintf(stderr, "pserv checkpoint: cannot write %s\n", export_path);
        rc = 1;
    }
    pserv_checkpoint_close(ck);
    return rc;
}
