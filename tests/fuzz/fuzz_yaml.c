/* fuzz_yaml.c: a YAML config file through tempo_config_load_yaml and the
 * cross-field checks (the public API the CLI's --config uses). */
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#include "tempo.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_path(0, "config.yaml");
    fuzz_write(path, data, size);
    tempo_config c;
    tempo_config_init(&c);
    tempo_error err = { 0 };
    if (tempo_config_load_yaml(&c, path, &err)) fuzz_check_error(err.message);
    else if (tempo_config_validate(&c, &err)) fuzz_check_error(err.message);
    tempo_config_free(&c);
    return 0;
}
