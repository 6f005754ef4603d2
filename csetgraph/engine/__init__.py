"""csetgraph.engine"""
