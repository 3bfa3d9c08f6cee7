/* fuzz_server_body.c: HTTP request bodies of `tempo serve` through its parser
 * (src/server/request.c: bytes -> a parsed request, or an error naming the
 * field), as each of the four generation endpoints reads them.
 *
 * The server is an application, not part of libtempo, so its parser is
 * compiled into this harness: request.c is pure (cJSON and the public API's
 * option table; no model, no threads, no sockets). Every error must be an
 * HTTP 4xx/5xx with a non-empty one-line message.
 */
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#include "server/request.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static tempo_config defaults;
    static bool ready;
    if (!ready) {
        tempo_config_init(&defaults);
        ready = true;
    }
    static const srv_kind kinds[] = { RK_COMPLETION, RK_CHAT, RK_GENERATE, RK_BRANCH };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        srv_request r;
        srv_error e;
        memset(&e, 0, sizeof e);
        if (srv_parse_request(kinds[i], (const char *)data, size, &defaults, &r, &e)) {
            if (e.status < 400 || e.status > 599) abort();
            fuzz_check_error(e.message);
            char *json = srv_error_json(&e);
            if (!json) abort();
            free(json);
        } else if (r.kind == RK_BRANCH && r.path_len != r.branch_step) {
            abort(); /* a parsed branch holds exactly the sets it replays */
        }
        srv_request_free(&r);
    }
    return 0;
}
