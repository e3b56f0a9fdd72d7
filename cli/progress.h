/*
 * What a launched worker reports to `pserv train`, one line per event on a pipe, and how the
 * launcher shows it: a progress bar per epoch on a terminal, plain lines otherwise.
 *
 *   step  <rank> <epoch> <batch> <batches> <loss> <seconds>
 *   epoch <rank> <epoch> <test_accuracy> <test_loss> <train_loss> <samples> <seconds>
 *   done  <rank> <epochs> <test_accuracy> <samples> <bytes_pushed> <bytes_pulled> <seconds>
 */
#ifndef PSERV_CLI_PROGRESS_H
#define PSERV_CLI_PROGRESS_H

#include <stdint.h>
#include <stdio.h>

typedef struct {
    int tty;
    unsigned workers, epochs, batch;
    double start, first_step;
    uint64_t steps_all; /* steps of every worker since the first one */
    /* per epoch, summed over workers */
    uint64_t steps_done, steps_total;
    double loss_sum;
    unsigned loss_n;
    unsigned epoch, reported; /* epoch of the bar; last epoch whose line was printed */
    /* summary */
    unsigned done, epochs_run;
    double accuracy, seconds;
    uint64_t samples, bytes_pushed, bytes_pulled;
    int reached;
    float target;
} progress_t;

void progress_init(progress_t *p, unsigned workers, unsigned epochs, unsigned batch, float target);
/* Consumes one report line. */
void progress_line(progress_t *p, const char *line);
/* The final summary. */
void progress_summary(const progress_t *p, FILE *out);
double progress_now(void);

#endif
