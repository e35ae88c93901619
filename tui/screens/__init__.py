"""One Screen per file. `registry.SCREENS` lists the top-level screens the App switches between."""
