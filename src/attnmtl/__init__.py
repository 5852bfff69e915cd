"""attnmtl: attention modules, attention encoders, multi-task learning with attention.

Every part is usable on its own in a user's training loop, as timm layers are::

    from attnmtl.attention import MultiHeadAttention, AttentionPooling
    from attnmtl.encoders import RNNEncoder, TransformerEncoder, ConvEncoder
    from attnmtl.models import create_model
"""

__version__ = "0.1.0"
