/* Times LPCNet's synthesis (lpcnet_synthesize: frame-rate network, then 160 samples of the
   sample-rate network, LPC prediction and PCM output per call), as `lpcnet_demo -synthesis` runs
   it, without the file I/O. Built by scripts/bench-lpcnet against an LPCNet checkout.

   Usage: lpcnet_timing FRAMES REPEATS
   Prints one line of JSON: the minimum and median over REPEATS of µs per output sample, each
   repeat being FRAMES consecutive frames of one stream (after one untimed warm-up repeat). */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "lpcnet.h"

static double now_us(void)
{
   struct timespec ts;
   clock_gettime(CLOCK_MONOTONIC, &ts);
   return ts.tv_sec * 1e6 + ts.tv_nsec * 1e-3;
}

static int cmp_double(const void *a, const void *b)
{
   double x = *(const double *)a, y = *(const double *)b;
   return (x > y) - (x < y);
}

/* Plausible features: a smooth cepstral envelope that drifts from frame to frame and a pitch
   period in the voiced range. The cost of a frame does not depend on them, but they keep the
   LPC synthesis filter stable, so the signal state stays finite. (With random weights the output
   is loud noise, over a quarter of it clipped; the clamps are branch-free, the cost the same.) */
static void make_features(float *f, int frame)
{
   int i;
   for (i = 0; i < NB_TOTAL_FEATURES; i++) f[i] = 0;
   f[0] = 2.f * sinf(0.05f * frame);
   for (i = 1; i < 18; i++) f[i] = 0.6f * sinf(0.3f * i + 0.07f * frame) / i;
   f[18] = 0.3f * sinf(0.02f * frame); /* pitch: period 50*f+100 samples */
   f[19] = 0.4f;                       /* pitch correlation */
}

int main(int argc, char **argv)
{
   int frames, repeats, r, k;
   double *times;
   float (*features)[NB_TOTAL_FEATURES];
   short pcm[LPCNET_FRAME_SIZE];
   long checksum = 0;
   LPCNetState *net;
   if (argc != 3 || (frames = atoi(argv[1])) <= 0 || (repeats = atoi(argv[2])) <= 0) {
      fprintf(stderr, "usage: %s FRAMES REPEATS\n", argv[0]);
      return 2;
   }
   features = malloc(sizeof(*features) * frames);
   times = malloc(sizeof(double) * repeats);
   for (k = 0; k < frames; k++) make_features(features[k], k);
   net = lpcnet_create();
   for (r = -1; r < repeats; r++) {
      double t0 = now_us();
      for (k = 0; k < frames; k++) {
         lpcnet_synthesize(net, features[k], pcm, LPCNET_FRAME_SIZE);
         checksum += pcm[k % LPCNET_FRAME_SIZE];
      }
      if (r >= 0) times[r] = (now_us() - t0) / ((double)frames * LPCNET_FRAME_SIZE);
   }
   lpcnet_destroy(net);
   qsort(times, repeats, sizeof(double), cmp_double);
   printf("{\"min_us_per_sample\": %.4f, \"median_us_per_sample\": %.4f, \"repeats\": %d, "
          "\"frames\": %d, \"sample_rate\": 16000, \"checksum\": %ld}\n",
          times[0], times[repeats / 2], repeats, frames, checksum);
   free(times);
   free(features);
   return 0;
}
