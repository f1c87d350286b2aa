/* Baseline for the unlock benchmark: one crypto_pwhash (Argon2id) at the given
   parameters, exactly what `vault` does to derive its key-encryption key.
   usage: pwhash OPSLIMIT MEMLIMIT */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 3 || sodium_init() < 0) return 2;
    unsigned char key[32], salt[crypto_pwhash_SALTBYTES] = {0};
    const char *pw = "benchmark passphrase";
    if (crypto_pwhash(key, sizeof key, pw, 20, salt, strtoull(argv[1], 0, 10),
                      (size_t)strtoull(argv[2], 0, 10), crypto_pwhash_ALG_ARGON2ID13) != 0) return 1;
    return key[0] == 0x42 ? 0 : 0;
}
