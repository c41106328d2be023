"""The ``jrag`` subcommands, one file each: argument parsing and printing only (the work is in
the library). ``joint_rag.cli`` holds the table that names them."""
