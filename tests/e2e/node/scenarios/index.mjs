/**
 * Every scenario: `name → { run(ctx), dedicatedServer?, authServer?, notFor?, pending? }`. A
 * scenario is a function of a Context (lib/harness.mjs), which carries the way in and the RxDB
 * version: the same scenario runs for every way and version of the matrix.
 *   dedicatedServer  the scenario restarts syncd: pytest gives it a syncd of its own
 *   authServer       the scenario needs a syncd that checks credentials (JWT) and the rpc `token`
 *   notFor           {way: reason}: ways in the scenario does not apply to
 *   pending          not runnable yet (the reason)
 */
import { authScenarios } from './auth.mjs';
import { customConflictHandler, deleteWhileOffline, twoClientsConverge } from './convergence.mjs';
import { initialSync10k } from './initial-sync.mjs';
import { liveLatencyStream, rapidEditsOneDocument, resumeFromCheckpoint, syncdRestart } from './live.mjs';
import { partialScenarios } from './partial.mjs';
import { hostileValues } from './values.mjs';

export const SCENARIOS = {
    initial_sync_10k: { run: initialSync10k },
    two_clients_converge: { run: twoClientsConverge },
    custom_conflict_handler: { run: customConflictHandler },
    delete_while_offline: { run: deleteWhileOffline },
    live_latency_stream: { run: liveLatencyStream },
    resume_from_checkpoint: { run: resumeFromCheckpoint },
    syncd_restart: { run: syncdRestart, dedicatedServer: true },
    hostile_values: { run: hostileValues },
    rapid_edits_one_document: { run: rapidEditsOneDocument },
    ...authScenarios,
    ...partialScenarios,
};
