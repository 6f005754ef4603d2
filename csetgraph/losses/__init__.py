"""csetgraph.losses"""
