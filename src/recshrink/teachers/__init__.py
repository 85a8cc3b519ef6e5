"""Teachers trained elsewhere: reading foreign checkpoints without running their code."""
