/* The shop's pricing stage, a Wasm agent in C (ABI v1, docs/WASM_ABI.md).
 *
 * It consumes "orders.created" (a map such as {"id": 7, "customer": "ada", "amount":
 * 41.5}) and publishes the same order on "orders.priced" with one more key, "price": the
 * amount times the rate (the agent's config: {"rate": 1.2}, the default), rounded to
 * cents. The order's other entries are copied byte for byte, never decoded. Its state is
 * {"priced": n}, so the count survives a restart and a new version.
 *
 * Built twice (make wasm): pricing.wasm, and pricing_v2.wasm with -DPRICING_V2, a new
 * version with a bug on purpose: its bulk discount looks up a table that has no tier
 * for orders of 80 and more, and traps on them. Deployed as a canary, it fails about a
 * fifth of its orders and is rolled back (README.md, "The shop").
 */
#include <stdint.h>
#include <string.h>

#define EXPORT(name) __attribute__((export_name(name)))
#define IMPORT(name) __attribute__((import_module("symbiont"), import_name(name)))

IMPORT("publish") void symbiont_publish(const char *topic, int topic_len, const uint8_t *payload, int payload_len);
IMPORT("log") void symbiont_log(int level, const char *text, int len);

static uint8_t in[16 * 1024];
static uint8_t out[sizeof in + 32];
static uint8_t state_out[32];
static double rate = 1.2;
static uint64_t priced = 0;

static uint64_t slice(const uint8_t *p, int len) { return ((uint64_t)(uintptr_t)p << 32) | (uint32_t)len; }

static void fail(const char *why) {
    symbiont_log(3, why, (int)strlen(why));
    __builtin_trap();
}

static uint64_t be(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
}

/* The size of the msgpack value at p (the scalars and strings an order holds), 0 if it
 * is something else or runs past n. */
static int skip(const uint8_t *p, int n) {
    if (n < 1) return 0;
    uint8_t b = p[0];
    int size;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) size = 1;
    else if ((b & 0xe0) == 0xa0) size = 1 + (b & 0x1f);
    else if (b == 0xcc || b == 0xd0) size = 2;
    else if (b == 0xcd || b == 0xd1) size = 3;
    else if (b == 0xca || b == 0xce || b == 0xd2) size = 5;
    else if (b == 0xcb || b == 0xcf || b == 0xd3) size = 9;
    else if (b == 0xd9 && n >= 2) size = 2 + p[1];
    else if (b == 0xda && n >= 3) size = 3 + (int)be(p + 1, 2);
    else return 0;
    return size <= n ? size : 0;
}

/* The msgpack number at p, or 0 when it is not one. */
static int number(const uint8_t *p, int n, double *value) {
    int size = skip(p, n);
    if (!size) return 0;
    uint8_t b = p[0];
    if (b <= 0x7f) *value = b;
    else if (b >= 0xe0) *value = (int8_t)b;
    else if (b >= 0xcc && b <= 0xcf) *value = (double)be(p + 1, size - 1);
    else if (b >= 0xd0 && b <= 0xd3) {
        int shift = 64 - 8 * (size - 1);
        *value = (double)((int64_t)(be(p + 1, size - 1) << shift) >> shift);
    } else if (b == 0xca) { uint32_t u = (uint32_t)be(p + 1, 4); float f; memcpy(&f, &u, 4); *value = f; }
    else if (b == 0xcb) { uint64_t u = be(p + 1, 8); memcpy(value, &u, 8); }
    else return 0;
    return 1;
}

static int is_key(const uint8_t *p, int n, const char *key) {
    int len = (int)strlen(key);
    return n > len && p[0] == (0xa0 | len) && memcmp(p + 1, key, len) == 0;
}

static int write_double(uint8_t *p, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    p[0] = 0xcb;
    for (int i = 0; i < 8; i++) p[1 + i] = (uint8_t)(u >> (56 - 8 * i));
    return 9;
}

static int write_state(uint8_t *p) { /* {"priced": n} */
    static const uint8_t head[] = {0x81, 0xa6, 'p', 'r', 'i', 'c', 'e', 'd', 0xcf};
    memcpy(p, head, sizeof head);
    for (int i = 0; i < 8; i++) p[sizeof head + i] = (uint8_t)(priced >> (56 - 8 * i));
    return sizeof head + 8;
}

#ifdef PRICING_V2
/* v2: a bulk discount by tier of 10 (EUR). The table stops at 80: the bug. */
static const double discount[8] = {0, 0, 0, 0.01, 0.02, 0.03, 0.04, 0.05};

static double discounted(double amount) {
    int tier = (int)(amount / 10);
    if (tier >= 8) fail("pricing v2: no discount tier for this amount");
    return amount * (1 - discount[tier]);
}
#else
static double discounted(double amount) { return amount; }
#endif

EXPORT("symbiont_abi_version") int abi_version(void) { return 1; }

EXPORT("symbiont_alloc") uint8_t *alloc(int size) { return size <= (int)sizeof in ? in : 0; }

/* The agent's config, {"rate": 1.2}: the rate is taken when it is a positive number. */
EXPORT("symbiont_init") void init(const uint8_t *config, int len) {
    if (len < 1 || (config[0] & 0xf0) != 0x80) return;
    int at = 1;
    for (int i = 0; i < (config[0] & 0x0f); i++) {
        int key = skip(config + at, len - at);
        int value = key ? skip(config + at + key, len - at - key) : 0;
        double r;
        if (!value) return;
        if (is_key(config + at, key, "rate") && number(config + at + key, value, &r) && r > 0) rate = r;
        at += key + value;
    }
}

EXPORT("symbiont_handle") uint64_t handle(const uint8_t *msg, int len) {
    /* [topic, order] */
    if (len < 2 || msg[0] != 0x92) fail("pricing: expected [topic, order]");
    int at = 1 + skip(msg + 1, len - 1);
    if (at == 1 || at >= len) fail("pricing: expected [topic, order]");
    uint8_t head = msg[at];
    int entries = head & 0x0f;
    if ((head & 0xf0) != 0x80 || entries == 15) fail("pricing: an order is a map of at most 14 entries");
    int body = at + 1;

    double amount = -1;
    at = body;
    for (int i = 0; i < entries; i++) {
        int key = skip(msg + at, len - at);
        if (!key) fail("pricing: an order's keys and values are numbers and strings");
        int value = skip(msg + at + key, len - at - key);
        if (!value) fail("pricing: an order's keys and values are numbers and strings");
        if (is_key(msg + at, key, "amount") && !number(msg + at + key, value, &amount))
            fail("pricing: the amount is not a number");
        at += key + value;
    }
    if (amount < 0) fail("pricing: the order has no amount");

    double price = (double)(int64_t)(discounted(amount) * rate * 100 + 0.5) / 100;
    int n = 0;
    out[n++] = 0x80 | (entries + 1);
    memcpy(out + n, msg + body, at - body);
    n += at - body;
    static const uint8_t price_key[] = {0xa5, 'p', 'r', 'i', 'c', 'e'};
    memcpy(out + n, price_key, sizeof price_key);
    n += sizeof price_key;
    n += write_double(out + n, price);
    symbiont_publish("orders.priced", 13, out, n);
    priced++;
    out[n] = 0xc0; /* the reply: nil */
    return slice(out + n, 1);
}

EXPORT("symbiont_state") uint64_t state(void) { return slice(state_out, write_state(state_out)); }

EXPORT("symbiont_migrate") void migrate(const uint8_t *p, int len) {
    double n;
    if (len > 8 && p[0] == 0x81 && is_key(p + 1, len - 1, "priced") && number(p + 8, len - 8, &n))
        priced = (uint64_t)n;
}
