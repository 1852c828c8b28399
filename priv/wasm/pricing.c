/* A Wasm agent in C (ABI v1, docs/WASM_ABI.md): prices an order.
 *
 * Input: [topic, amount] with amount a msgpack number. It answers with the price, the
 * amount times the rate (1.2 unless the agent's config is a number), rounded to cents,
 * and publishes [amount, price] on "pricing.priced". A payload that is not a number traps
 * (the message fails; the agent keeps serving).
 *
 * Build: make wasm (clang --target=wasm32-wasi -O2 -mexec-model=reactor).
 */
#include <stdint.h>
#include <string.h>

#define EXPORT(name) __attribute__((export_name(name)))
#define IMPORT(name) __attribute__((import_module("symbiont"), import_name(name)))

IMPORT("publish") void symbiont_publish(const char *topic, int topic_len, const uint8_t *payload, int payload_len);
IMPORT("log") void symbiont_log(int level, const char *text, int len);

static uint8_t in[64 * 1024];
static uint8_t out[32];
static double rate = 1.2;

static uint64_t slice(const uint8_t *p, int len) { return ((uint64_t)(uintptr_t)p << 32) | (uint32_t)len; }

static uint64_t be(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
}

/* Reads a msgpack number at p; returns the bytes it took, 0 if it is not a number. */
static int read_number(const uint8_t *p, int n, double *value) {
    if (n < 1) return 0;
    uint8_t b = p[0];
    if (b <= 0x7f) { *value = b; return 1; }
    if (b >= 0xe0) { *value = (int8_t)b; return 1; }
    static const int widths[] = {1, 2, 4, 8};
    if (b >= 0xcc && b <= 0xcf) { int w = widths[b - 0xcc]; if (n < 1 + w) return 0; *value = (double)be(p + 1, w); return 1 + w; }
    if (b >= 0xd0 && b <= 0xd3) {
        int w = widths[b - 0xd0]; if (n < 1 + w) return 0;
        uint64_t u = be(p + 1, w);
        int shift = 64 - 8 * w;
        *value = (double)((int64_t)(u << shift) >> shift);
        return 1 + w;
    }
    if (b == 0xca && n >= 5) { uint32_t u = (uint32_t)be(p + 1, 4); float f; memcpy(&f, &u, 4); *value = f; return 5; }
    if (b == 0xcb && n >= 9) { uint64_t u = be(p + 1, 8); memcpy(value, &u, 8); return 9; }
    return 0;
}

/* Skips a msgpack str at p; returns the bytes it took, 0 if it is not a str. */
static int skip_str(const uint8_t *p, int n) {
    if (n < 1) return 0;
    uint8_t b = p[0];
    int head, len;
    if ((b & 0xe0) == 0xa0) { head = 1; len = b & 0x1f; }
    else if (b == 0xd9 && n >= 2) { head = 2; len = p[1]; }
    else if (b == 0xda && n >= 3) { head = 3; len = (int)be(p + 1, 2); }
    else return 0;
    return head + len <= n ? head + len : 0;
}

static int write_double(uint8_t *p, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    p[0] = 0xcb;
    for (int i = 0; i < 8; i++) p[1 + i] = (uint8_t)(u >> (56 - 8 * i));
    return 9;
}

EXPORT("symbiont_abi_version") int abi_version(void) { return 1; }

EXPORT("symbiont_alloc") uint8_t *alloc(int size) { return size <= (int)sizeof in ? in : 0; }

EXPORT("symbiont_init") void init(const uint8_t *config, int len) {
    double r;
    if (read_number(config, len, &r) && r > 0) rate = r;
}

EXPORT("symbiont_handle") uint64_t handle(const uint8_t *msg, int len) {
    if (len < 1 || msg[0] != 0x92) __builtin_trap();
    int at = 1, took = skip_str(msg + at, len - at);
    if (!took) __builtin_trap();
    at += took;
    double amount;
    if (!read_number(msg + at, len - at, &amount)) {
        static const char why[] = "pricing: the payload is not a number";
        symbiont_log(3, why, sizeof why - 1);
        __builtin_trap();
    }
    double price = (double)(int64_t)(amount * rate * 100 + (amount >= 0 ? 0.5 : -0.5)) / 100;
    out[0] = 0x92; /* [amount, price] */
    int n = 1 + write_double(out + 1, amount);
    n += write_double(out + n, price);
    symbiont_publish("pricing.priced", 14, out, n);
    return slice(out + 10, 9); /* the price alone */
}
