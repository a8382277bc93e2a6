"""Detection of a repository's stacks, broad then strict: each ecosystem's module finds its
projects by their markers, then resolves one package manager, toolchain version and set of
commands per project, recording the file (and line) behind every decision."""
