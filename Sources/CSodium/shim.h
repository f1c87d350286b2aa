#ifndef GBG_VAULT_CSODIUM_SHIM_H
#define GBG_VAULT_CSODIUM_SHIM_H
#include <sodium.h>
#endif
