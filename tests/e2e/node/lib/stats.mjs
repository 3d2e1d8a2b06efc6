/**
 * What a way in counts for the scenarios: pull requests and the documents they returned (to tell a
 * stream delivery from a pull, and a resume from a re-download), push requests, and how often the
 * live channel came up.
 */
export class ReplicationStats {
    /** False for a way whose pull requests the harness cannot see (pull counters stay 0). */
    countsPulls = true;
    /** False for a way whose live channel the harness cannot see (isLive() is always true). */
    seesLive = true;
    pullRequests = 0;
    pulledDocuments = 0;
    pushRequests = 0;
    pushedRows = 0;
    liveConnections = 0;

    pulled(documents) {
        this.pullRequests += 1;
        this.pulledDocuments += documents;
    }

    pushed(rows) {
        this.pushRequests += 1;
        this.pushedRows += rows;
    }

    liveChanged(connected) {
        if (connected) {
            this.liveConnections += 1;
        }
    }

    snapshot() {
        return {
            countsPulls: this.countsPulls,
            seesLive: this.seesLive,
            pullRequests: this.pullRequests,
            pulledDocuments: this.pulledDocuments,
            pushRequests: this.pushRequests,
            pushedRows: this.pushedRows,
            liveConnections: this.liveConnections,
        };
    }
}
