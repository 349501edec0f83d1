/* stream-tail: prints the messages of a JetStream stream (demo and debugging aid). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nats/nats.h>

/* Usage: stream-tail <nats-url> <stream> [first-seq]. Prints one line per message. */
int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s <nats-url> <stream> [first-seq]\n", argv[0]);
        return 2;
    }
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsStreamInfo *si = NULL;
    natsStatus s = natsConnection_ConnectTo(&nc, argv[1]);
    if (s == NATS_OK)
        s = natsConnection_JetStream(&js, nc, NULL);
    if (s == NATS_OK)
        s = js_GetStreamInfo(&si, js, argv[2], NULL, NULL);
    if (s != NATS_OK) {
        fprintf(stderr, "stream-tail: %s: %s\n", natsStatus_GetText(s), nats_GetLastError(NULL));
        return 1;
    }
    uint64_t first = argc > 3 ? strtoull(argv[3], NULL, 10) : si->State.FirstSeq;
    printf("stream %s: %" PRIu64 " messages\n", argv[2], si->State.Msgs);
    for (uint64_t seq = first; seq > 0 && seq <= si->State.LastSeq; seq++) {
        natsMsg *m = NULL;
        if (js_GetMsg(&m, js, argv[2], seq, NULL, NULL) != NATS_OK)
            continue;
        const char *id = NULL;
        natsMsgHeader_Get(m, "Nats-Msg-Id", &id);
        printf("#%" PRIu64 " %s Nats-Msg-Id=%s %.*s\n", seq, natsMsg_GetSubject(m), id ? id : "-",
               natsMsg_GetDataLength(m), natsMsg_GetData(m));
        /* Every other header, each value on its own line: the quick start shows they travel. */
        const char **keys = NULL;
        int nkeys = 0;
        if (natsMsgHeader_Keys(m, &keys, &nkeys) == NATS_OK) {
            for (int k = 0; k < nkeys; k++) {
                if (strcmp(keys[k], "Nats-Msg-Id") == 0)
                    continue;
                const char **values = NULL;
                int nvalues = 0;
                if (natsMsgHeader_Values(m, keys[k], &values, &nvalues) != NATS_OK)
                    continue;
                for (int v = 0; v < nvalues; v++)
                    printf("    %s: %s\n", keys[k], values[v]);
                free((void *)values);
            }
            free((void *)keys);
        }
        natsMsg_Destroy(m);
    }
    jsStreamInfo_Destroy(si);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    nats_Close();
    return 0;
}
