"""`driftline demo`: the whole continuous-training loop on real processes, shown live."""
