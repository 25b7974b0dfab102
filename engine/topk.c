/* topk.c: turns logits into answers: softmax probabilities and the top k. */
#include "engine_impl.h"

#include <math.h>

void eng_softmax(const float *logits, int n, float *probs) {
    if (n <= 0) return;
    /* subtract the max so exp never overflows; sum in double */
    float mx = logits[0];
    for (int i = 1; i < n; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += exp((double)logits[i] - mx);
    for (int i = 0; i < n; i++) probs[i] = (float)(exp((double)logits[i] - mx) / sum);
}

/* Orders a before b when its logit is higher, or equal with a lower index. */
static int ranks_before(const float *logits, int a, int b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
}

int eng_topk(const float *logits, int n, int k, struct eng_pred *out) {
    if (k > n) k = n;
    if (k <= 0) return 0;
    /* insertion into the sorted list out[0..len): O(n k), and k is small */
    int len = 0;
    for (int i = 0; i < n; i++) {
        if (len == k && !ranks_before(logits, i, out[k - 1].index)) continue;
        int j = len < k ? len++ : k - 1;
        while (j > 0 && ranks_before(logits, i, out[j - 1].index)) {
            out[j].index = out[j - 1].index;
            j--;
        }
        out[j].index = i;
    }
    /* softmax denominator, shifted by the max logit so exp cannot overflow */
    float mx = logits[out[0].index];
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += exp((double)logits[i] - mx);
    for (int j = 0; j < k; j++) {
        out[j].logit = logits[out[j].index];
        out[j].score = (float)(exp((double)out[j].logit - mx) / sum);
    }
    return k;
}
