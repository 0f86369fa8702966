"""Elman's (1990) experiments, trained and evaluated with ElmanRNN: the embedded default demo."""
