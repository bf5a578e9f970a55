"""The network: `backbone` (the recurrent layers and their state), `recurrent`
(the same math written out, forward and backward), `tbptt` (truncated BPTT)
and `policy` (encoder -> backbone -> controller heads, and the loss).
"""
