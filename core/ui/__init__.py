"""The Streamlit side of Paru: the only package that imports Streamlit; no other core module imports it.

navigation (the one page list), frame (page config, sidebar, run selector, guidance), cached (every
st.cache_* function), figures (plotly, pure), tables (pandas, pure), panels (sections the pages draw).
Nothing here imports TensorFlow at import time: the first call that needs a model loads it.
"""
