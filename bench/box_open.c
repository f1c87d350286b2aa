/* Baseline for the member-unlock benchmark: what opening a key slot costs by itself.
   Makes an X25519 key pair, seals 96 bytes to it (a key slot's size) and opens the box
   N times (default 1), in one process. usage: box_open [N] */
#include <sodium.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (sodium_init() < 0) return 2;
    long n = argc > 1 ? strtol(argv[1], 0, 10) : 1;
    unsigned char pk[crypto_box_PUBLICKEYBYTES], sk[crypto_box_SECRETKEYBYTES];
    unsigned char message[96] = {1}, sealed[96 + crypto_box_SEALBYTES], opened[96];
    crypto_box_keypair(pk, sk);
    if (crypto_box_seal(sealed, message, sizeof message, pk) != 0) return 1;
    for (long i = 0; i < n; i++) {
        if (crypto_box_seal_open(opened, sealed, sizeof sealed, pk, sk) != 0) return 1;
    }
    return opened[0] == 1 ? 0 : 1;
}
