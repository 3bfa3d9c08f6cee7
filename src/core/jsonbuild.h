/* jsonbuild.h: building a cJSON tree without losing an allocation failure.
 *
 * cJSON's cJSON_Add*ToObject return NULL when an allocation fails and then free
 * what they created, but cJSON_AddItemToObject/ToArray leave the item with the
 * caller, and nothing records that a member is missing: a document built the
 * plain way comes out silently incomplete, or leaks, when memory runs out.
 * These helpers set *bad instead; the builder then deletes the whole tree and
 * reports out of memory. */
#ifndef TEMPO_CORE_JSONBUILD_H
#define TEMPO_CORE_JSONBUILD_H

#include <cjson/cJSON.h>
#include <stdbool.h>

/* p itself; *bad set when p is NULL (the value of a failed cJSON_Add*ToObject
 * or cJSON_Create*). */
static inline cJSON *tp_jb_must(cJSON *p, bool *bad) {
    if (!p) *bad = true;
    return p;
}

/* item into parent (under key, or appended when key is NULL). The item is
 * deleted when it cannot be attached (parent NULL, allocation failed). */
static inline void tp_jb_attach(cJSON *parent, const char *key, cJSON *item, bool *bad) {
    if (!item) {
        *bad = true;
        return;
    }
    bool ok = key ? cJSON_AddItemToObject(parent, key, item) : cJSON_AddItemToArray(parent, item);
    if (!ok) {
        cJSON_Delete(item);
        *bad = true;
    }
}

#endif
