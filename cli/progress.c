#include "progress.h"

#include <string.h>
#include <time.h>
#include <unistd.h>

double progress_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void progress_init(progress_t *p, unsigned workers, unsigned epochs, unsigned batch, float target)
{
    memset(p, 0, sizeof(*p));
    p->tty = isatty(STDOUT_FILENO);
    p->workers = workers;
    p->epochs = epochs;
    p->batch = batch;
    p->target = target;
    p->start = progress_now();
}

static void progress_bar(progress_t *p, unsigned epoch)
{
    const int width = 30;
    double frac = p->steps_total ? (double)p->steps_done / (double)p->steps_total : 0;
    int fill = (int)(frac * width);
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    printf("\repoch %2u/%u [%s] %3.0f%%  loss %.4f  %6.0f samples/s ", epoch, p->epochs, bar, frac * 100,
           p->loss_n ? p->loss_sum / p->loss_n : 0.0, p->steps_all * p->batch / (progress_now() - p->first_step + 1e-9));
    fflush(stdout);
}

void progress_line(progress_t *p, const char *line)
{
    unsigned rank, epoch, batch, batches, epochs;
    double loss, seconds, acc, test_loss, train_loss;
    unsigned long long samples, pushed, pulled, round;
    if (sscanf(line, "resumed %u %llu %u %u %u", &rank, &round, &epoch, &batch, &batches) == 5) {
        if (rank == 0) printf("resumed at round %llu: epoch %u, step %u of %u\n", round, epoch, batch, batches);
        fflush(stdout);
    } else if (sscanf(line, "step %u %u %u %u %lf %lf", &rank, &epoch, &batch, &batches, &loss, &seconds) == 6) {
        if (epoch != p->epoch) {
            p->epoch = epoch;
            p->steps_done = 0;
            p->loss_sum = 0;
            p->loss_n = 0;
        }
        p->steps_total = (uint64_t)batches * p->workers;
        p->steps_done++;
        if (p->steps_all++ == 0) p->first_step = progress_now();
        p->loss_sum += loss;
        p->loss_n++;
        if (p->tty && epoch > p->reported && (p->steps_done % 8 == 0 || p->steps_done == p->steps_total))
            progress_bar(p, epoch);
    } else if (sscanf(line, "epoch %u %u %lf %lf %lf %llu %lf", &rank, &epoch, &acc, &test_loss, &train_loss,
                      &samples, &seconds) == 7) {
        if (rank != 0) return;
        p->reported = epoch;
        p->samples = samples;
        double elapsed = progress_now() - p->start;
        if (p->tty) printf("\r%*s\r", 100, "");
        printf("epoch %2u/%u  train loss %.4f  test loss %.4f  test accuracy %.4f  %.0f samples/s  %.1f s\n", epoch,
               p->epochs, train_loss, test_loss, acc, elapsed > 0 ? (double)samples / elapsed : 0.0, elapsed);
        fflush(stdout);
    } else if (sscanf(line, "done %u %u %lf %llu %llu %llu %lf", &rank, &epochs, &acc, &samples, &pushed, &pulled,
                      &seconds) == 7) {
        p->done++;
        p->bytes_pushed += pushed;
        p->bytes_pulled += pulled;
        if (rank == 0) {
            p->epochs_run = epochs;
            p->accuracy = acc;
            p->samples = samples;
            p->seconds = seconds;
            p->reached = acc >= p->target;
        }
    }
}

void progress_summary(const progress_t *p, FILE *out)
{
    double elapsed = progress_now() - p->start;
    fprintf(out,
            "\nsummary: test accuracy %.4f after %u epochs (target %.2f %s)\n"
            "         %.1f s in all, %.1f s training, %.0f samples/s over %u workers\n"
            "         pushed %.1f MiB, pulled %.1f MiB\n",
            p->accuracy, p->epochs_run, p->target, p->reached ? "reached" : "not reached", elapsed, p->seconds,
            p->seconds > 0 ? (double)p->samples / p->seconds : 0.0, p->workers, (double)p->bytes_pushed / (1 << 20),
            (double)p->bytes_pulled / (1 << 20));
}
