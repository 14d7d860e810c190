/* test_attack.c -- Byzantine behaviours: parsing, the normal quantile, and
 * each attack's vector against a direct computation. */
#include <math.h>
#include <string.h>

#include "spirt/attack.h"
#include "test.h"

static void test_parse(void) {
    test_begin("attack specs");
    SpirtError error;
    AttackConfig config;
    CHECK_OK(attack_parse("sign-flip", &config, &error), &error);
    CHECK(config.kind == ATTACK_SIGN_FLIP && config.scale == 10.0);
    CHECK_OK(attack_parse("gaussian:sigma=50", &config, &error), &error);
    CHECK(config.kind == ATTACK_GAUSSIAN && config.sigma == 50.0);
    CHECK_OK(attack_parse("ipm:epsilon=0.5", &config, &error), &error);
    CHECK(config.epsilon == 0.5);
    CHECK_OK(attack_parse("mimic:target=2", &config, &error), &error);
    CHECK(config.target == 2);
    char text[64];
    attack_format(&config, text, sizeof(text));
    AttackConfig again;
    CHECK(attack_parse(text, &again, &error) == SPIRT_OK && again.kind == ATTACK_MIMIC && again.target == 2);
    CHECK_ERROR(attack_parse("flip", &config, &error), SPIRT_ERR_INVALID, &error, "unknown attack 'flip'");
    CHECK_ERROR(attack_parse("gaussian:scale=3", &config, &error), SPIRT_ERR_INVALID, &error, "accepts: sigma");
    CHECK_ERROR(attack_parse("gaussian:sigma=abc", &config, &error), SPIRT_ERR_INVALID, &error, "not a finite number");
    CHECK_ERROR(attack_parse("gaussian:sigma=-1", &config, &error), SPIRT_ERR_INVALID, &error, "> 0");
    CHECK_ERROR(attack_parse("ipm:epsilon", &config, &error), SPIRT_ERR_INVALID, &error, "name=value");
    CHECK_ERROR(attack_parse("mimic:target=1.5", &config, &error), SPIRT_ERR_INVALID, &error, "index");
    CHECK_ERROR(attack_parse("", &config, &error), SPIRT_ERR_INVALID, &error, "empty");
    CHECK(attack_is_omniscient(&(AttackConfig){.kind = ATTACK_ALIE}));
    CHECK(!attack_is_omniscient(&(AttackConfig){.kind = ATTACK_SIGN_FLIP}));
    CHECK(attack_poisons_labels(&(AttackConfig){.kind = ATTACK_LABEL_FLIP}));

    /* The protocol misbehaviours: no parameters. */
    const char *protocol[] = {"silent", "wrong-shape", "nan", "garbage"};
    const AttackKind kinds[] = {ATTACK_SILENT, ATTACK_WRONG_SHAPE, ATTACK_NAN, ATTACK_GARBAGE};
    for (int i = 0; i < 4; i++) {
        CHECK_OK(attack_parse(protocol[i], &config, &error), &error);
        CHECK(config.kind == kinds[i] && strcmp(attack_kind_name(config.kind), protocol[i]) == 0);
        attack_format(&config, text, sizeof(text));
        CHECK(strcmp(text, protocol[i]) == 0);
        CHECK(attack_publishes(&config) == (kinds[i] != ATTACK_SILENT));
        CHECK(attack_publishes_garbage(&config) == (kinds[i] == ATTACK_GARBAGE));
        CHECK(!attack_is_omniscient(&config) && !attack_poisons_labels(&config));
    }
    CHECK_ERROR(attack_parse("nan:fraction=0.5", &config, &error), SPIRT_ERR_INVALID, &error, "accepts: none");
    CHECK_ERROR(attack_parse("silence", &config, &error), SPIRT_ERR_INVALID, &error, "silent, wrong-shape, nan, garbage");
    CHECK(attack_publishes(&(AttackConfig){.kind = ATTACK_SIGN_FLIP}));
}

static void test_quantile(void) {
    test_begin("normal quantile (known values) and ALIE's z");
    /* Reference values of the probit function (tables / scipy.stats.norm.ppf). */
    CHECK_NEAR(attack_normal_quantile(0.975), 1.959963984540054, 1e-9);
    CHECK_NEAR(attack_normal_quantile(0.6), 0.2533471031357997, 1e-9);
    CHECK_NEAR(attack_normal_quantile(0.1), -1.2815515655446004, 1e-9);
    CHECK_NEAR(attack_normal_quantile(0.5), 0.0, 1e-12);
    CHECK_NEAR(attack_normal_quantile(1e-6), -4.753424308822899, 1e-7);
    CHECK(isnan(attack_normal_quantile(0.0)) && isnan(attack_normal_quantile(1.0)));
    /* n = 10, f = 2: s = floor(10/2 + 1) - 2 = 4, z = Phi^-1(6/10). */
    CHECK_NEAR(attack_alie_z(10, 2), 0.2533471031357997, 1e-9);
    /* n = 50, f = 12 (the paper's example scale): s = 14, z = Phi^-1(36/50). */
    CHECK_NEAR(attack_alie_z(50, 12), attack_normal_quantile(0.72), 1e-12);
}

static void test_craft(void) {
    test_begin("crafted vectors");
    SpirtError error;
    enum { D = 5, H = 3 };
    float own[D] = {1, -2, 0.5f, 0, 3};
    float h0[D] = {1, 2, 3, 4, 5}, h1[D] = {2, 2, 1, 4, 7}, h2[D] = {0, 5, 2, 4, 6};
    const float *honest[H] = {h0, h1, h2};
    float out[D];
    AttackConfig config;

    attack_parse("sign-flip:scale=3", &config, &error);
    CHECK_OK(attack_craft(&config, own, NULL, 0, D, 10, 2, 1, out, &error), &error);
    for (int j = 0; j < D; j++) CHECK_NEAR(out[j], -3.0 * own[j], 0);

    attack_parse("ipm:epsilon=0.5", &config, &error);
    CHECK_OK(attack_craft(&config, own, honest, H, D, 10, 2, 1, out, &error), &error);
    for (int j = 0; j < D; j++) CHECK_NEAR(out[j], -0.5 * (h0[j] + h1[j] + h2[j]) / 3.0, 1e-6);

    attack_parse("alie", &config, &error);
    CHECK_OK(attack_craft(&config, own, honest, H, D, 10, 2, 1, out, &error), &error);
    double z = 0.2533471031357997;
    for (int j = 0; j < D; j++) {
        double mean = (h0[j] + h1[j] + h2[j]) / 3.0;
        double var = (pow(h0[j] - mean, 2) + pow(h1[j] - mean, 2) + pow(h2[j] - mean, 2)) / 3.0;
        CHECK_NEAR(out[j], mean - z * sqrt(var), 1e-5);
    }

    attack_parse("mimic:target=1", &config, &error);
    CHECK_OK(attack_craft(&config, own, honest, H, D, 10, 2, 1, out, &error), &error);
    CHECK(memcmp(out, h1, sizeof(out)) == 0);
    CHECK_ERROR(attack_craft(&config, own, NULL, 0, D, 10, 2, 1, out, &error), SPIRT_ERR_PRECONDITION, &error,
                "needs the honest vectors");

    /* Gaussian noise: reproducible per seed, different across seeds, and
     * with the configured spread (200k draws: sd within 1%). */
    enum { BIG = 200000 };
    static float noise_a[BIG], noise_b[BIG], noise_c[BIG];
    attack_parse("gaussian:sigma=100", &config, &error);
    attack_craft(&config, NULL, NULL, 0, BIG, 10, 2, 42, noise_a, &error);
    attack_craft(&config, NULL, NULL, 0, BIG, 10, 2, 42, noise_b, &error);
    attack_craft(&config, NULL, NULL, 0, BIG, 10, 2, 43, noise_c, &error);
    CHECK(memcmp(noise_a, noise_b, sizeof(noise_a)) == 0);
    CHECK(memcmp(noise_a, noise_c, sizeof(noise_a)) != 0);
    double sum = 0, sum_squares = 0;
    for (int j = 0; j < BIG; j++) {
        sum += noise_a[j];
        sum_squares += (double)noise_a[j] * noise_a[j];
    }
    CHECK_NEAR(sum / BIG, 0.0, 1.5);
    CHECK_NEAR(sqrt(sum_squares / BIG), 100.0, 1.0);

    /* wrong-shape: the first half of the own vector, never the model's size. */
    attack_parse("wrong-shape", &config, &error);
    CHECK(attack_vector_count(&config, D) == 2 && attack_vector_count(&config, 1) == 2 &&
          attack_vector_count(&config, 7850) == 3925);
    CHECK(attack_vector_count(&(AttackConfig){.kind = ATTACK_NAN}, D) == D);
    float half[2] = {0};
    CHECK_OK(attack_craft(&config, own, NULL, 0, D, 10, 2, 1, half, &error), &error);
    CHECK(half[0] == own[0] && half[1] == own[1]);
    float one = 4.0f, two[2] = {1, 1};
    CHECK_OK(attack_craft(&config, &one, NULL, 0, 1, 10, 2, 1, two, &error), &error);
    CHECK(two[0] == 4.0f && two[1] == 0.0f);

    /* nan: the own vector with NaN at coordinates 0, 100, 200. */
    enum { WIDE = 250 };
    float wide[WIDE], poisoned[WIDE];
    for (int j = 0; j < WIDE; j++) wide[j] = (float)j * 0.5f - 3.0f;
    attack_parse("nan", &config, &error);
    CHECK_OK(attack_craft(&config, wide, NULL, 0, WIDE, 10, 2, 1, poisoned, &error), &error);
    int nan_ok = 1;
    for (int j = 0; j < WIDE; j++) nan_ok &= j % 100 == 0 ? isnan(poisoned[j]) : poisoned[j] == wide[j];
    CHECK(nan_ok);
    CHECK_ERROR(attack_craft(&config, NULL, NULL, 0, WIDE, 10, 2, 1, poisoned, &error), SPIRT_ERR_INVALID, &error,
                "own vector");

    /* garbage: reproducible per seed, different across seeds, and spread
     * over every byte value (64 KiB from a good generator hits all 256). */
    enum { BYTES = 65536 + 3 };
    static unsigned char bytes_a[BYTES], bytes_b[BYTES], bytes_c[BYTES];
    attack_fill_garbage(7, bytes_a, BYTES);
    attack_fill_garbage(7, bytes_b, BYTES);
    attack_fill_garbage(8, bytes_c, BYTES);
    CHECK(memcmp(bytes_a, bytes_b, BYTES) == 0 && memcmp(bytes_a, bytes_c, BYTES) != 0);
    int seen[256] = {0}, distinct = 0;
    for (int i = 0; i < BYTES; i++) seen[bytes_a[i]] = 1;
    for (int v = 0; v < 256; v++) distinct += seen[v];
    CHECKF(distinct == 256, "%d distinct byte values", distinct);

    uint8_t labels[4] = {0, 3, 9, 5};
    attack_flip_labels(labels, 4, 10);
    CHECK(labels[0] == 9 && labels[1] == 6 && labels[2] == 0 && labels[3] == 4);
}

int main(void) {
    test_parse();
    test_quantile();
    test_craft();
    return test_finish();
}
