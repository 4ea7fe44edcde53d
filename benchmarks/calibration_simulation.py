"""Print the simulation figures behind oodlens.calibrate's guarantees (seeded, vectorised, a few seconds on a CPU).

    python benchmarks/calibration_simulation.py [--reps 2000] [--seed 0]

1. validity: P(p ≤ t) for ID test points, marginal / Simes / DKW p-values (should be ≤ t);
2. BH and Storey-BH on batches of 100 (20 % OOD, shift 2.5 σ): realised FDR (≤ α·m0/m for BH) and power;
3. calibration-conditional coverage: fraction of calibration draws with P(p ≤ t | cal) ≤ t for all t
   (exact per draw; ≥ 1 − δ = 0.9 for Simes and DKW);
4. thresholds at 95 % acceptance: realised ID acceptance per calibration draw.
"""

from __future__ import annotations

import argparse
import time

from oodlens.calibrate.simulation import simulate_conditional, simulate_fdr, simulate_thresholds, simulate_validity


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    reps, seed = args.reps, args.seed
    start = time.perf_counter()

    v = simulate_validity(n=100, m=50, reps=reps, seed=seed)
    print(f"1. Validity of ID p-values (n = {v['n']} calibration, {v['m']} ID test points × {v['reps']} reps)")
    print(f"   {'method':<9} {'t':>5} {'P(p ≤ t)':>9} {'± MC s.e.':>10}")
    for r in v["rows"]:
        print(f"   {r['method']:<9} {r['t']:>5.2f} {r['rate']:>9.4f} {r['se']:>10.4f}")

    f = simulate_fdr(n=200, m=100, reps=reps, seed=seed)
    print(f"\n2. FDR (n = {f['n']}, batches of {f['m']} with {f['n_ood']} OOD shifted by {f['shift']} σ, {f['reps']} reps)")
    print(f"   {'method':<7} {'α':>5} {'FDR':>7} {'± s.e.':>7} {'α·m0/m':>7} {'power':>7}")
    for r in f["rows"]:
        print(f"   {r['method']:<7} {r['alpha']:>5.2f} {r['fdr']:>7.4f} {r['se']:>7.4f} {r['bound']:>7.3f} {r['power']:>7.3f}")

    c = simulate_conditional(n=200, reps=reps, delta=0.1, seed=seed)
    print(f"\n3. Calibration-conditional coverage (n = {c['n']}, δ = {c['delta']}, {c['reps']} calibration draws)")
    print(f"   {'method':<9} {'coverage':>9} {'± s.e.':>7} {'mean excess':>12}")
    for r in c["rows"]:
        print(f"   {r['method']:<9} {r['coverage']:>9.4f} {r['se']:>7.4f} {r['mean_excess']:>12.5f}")

    t = simulate_thresholds(n=1000, reps=reps, acceptance=0.95, delta=0.1, seed=seed)
    print(f"\n4. Thresholds for {100 * t['acceptance']:g} % ID acceptance (n = {t['n']}, δ = {t['delta']}, {t['reps']} draws)")
    print(f"   {'rule':<9} {'k':>5} {'mean acceptance':>16} {'P(acceptance ≥ 95 %)':>21}")
    for r in t["rows"]:
        print(f"   {r['guarantee']:<9} {r['k']:>5} {r['mean_acceptance']:>16.4f} {r['frac_at_target']:>21.4f}")
    print(f"\n({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
