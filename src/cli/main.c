/* main.c: the tempo command line (placeholder until the generation CLI lands). */
#include <stdio.h>
#include "tempo.h"
int main(void) { printf("tempo %s\n", TEMPO_VERSION); return 0; }
