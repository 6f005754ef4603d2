"""csetgraph.evaluation"""
