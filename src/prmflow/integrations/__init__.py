"""Rewards for RL trainers from a prmflow PRM: TRL (`trl.py`), OpenRLHF (`openrlhf.py`), verl (`verl.py`).

Each adapter takes its trainer's own input, reduces it to (problem, completion text) (`text.py`) and asks
one `PRMClient` (`client.py`) for the aggregated solution reward: the served PRM over HTTP (MLflow's
`/invocations`, the serving contract) or a model directory / registered model loaded in process. The
completion is sent as the contract's `text` field, so it is split into steps by the server's own rules.
"""
