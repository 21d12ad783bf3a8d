"""analyzers"""
