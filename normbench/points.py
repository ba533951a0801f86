"""The recorded points: where in a layer the recorder takes values, and how the figures and the report name them.
Defined here once, without torch: the config (its histogram ranges), the recorder, the figures, the report and the
command line's --point all read these.

    pre_norm       the input of the layer's norm  (fc output Wx+b, or the activation output if placement=after)
    post_norm      the output of the layer's norm (= pre_norm when norm is none)
    post_act       the output of the activation   (layer 0, the input, has the identity as activation)
    grad_pre_norm  d(loss)/d(pre_norm): the backpropagated gradient, in every hidden layer
    grad_weight    d(loss)/d(W): the layer's weight gradient, in every hidden layer
"""

FORWARD = ("pre_norm", "post_norm", "post_act")  # in every recorded layer
GRADIENT = ("grad_pre_norm", "grad_weight")  # in every hidden layer
ALL = (*FORWARD, *GRADIENT)

WORDS = {  # a figure's title, the report's captions
    "pre_norm": "before the norm",
    "post_norm": "after the norm",
    "post_act": "after the activation",
    "grad_pre_norm": "gradient dL/dz at the norm's input",
    "grad_weight": "weight gradient dL/dW",
}
