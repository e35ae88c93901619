"""Fine-tuning: configs, pre-flight checks, the detached runner and its run directory."""
