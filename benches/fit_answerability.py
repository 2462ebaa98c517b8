# Fits agents.grounding.answerable_* by logistic regression on `eval-answers --dump` lines of the
# tune split and prints abstain_ok / false_abstain at several thresholds on both splits.
# python3 benches/fit_answerability.py tune.jsonl held-out.jsonl
import json, math, sys
names=["dense","lexical","window_lexical","passage_lexical","missing_key_tokens","type_evidence","passage_similarity","negation_mismatch","unseen_terms"]
def load(f):
    rows=[json.loads(l) for l in open(f)]
    return [r['features'] or [0.0]*len(names) for r in rows],[1.0 if r['answerable'] else 0.0 for r in rows],rows
Xt,yt,rt=load(sys.argv[1]); Xh,yh,rh=load(sys.argv[2])
for i,n in enumerate(names):
    a=[x[i] for x,y in zip(Xt,yt) if y==1]; u=[x[i] for x,y in zip(Xt,yt) if y==0]
    print(f"  {n:20s} ans {sum(a)/len(a):.3f}  un {sum(u)/len(u):.3f}")
d=len(names)
mu=[sum(x[i] for x in Xt)/len(Xt) for i in range(d)]
sd=[max(1e-6,(sum((x[i]-mu[i])**2 for x in Xt)/len(Xt))**0.5) for i in range(d)]
Z=[[(x[i]-mu[i])/sd[i] for i in range(d)] for x in Xt]
w=[0.0]*d; b=0.0; lam=float(sys.argv[3]) if len(sys.argv)>3 else 0.01
for it in range(3000):
    gw=[0.0]*d; gb=0.0
    for z,y in zip(Z,yt):
        p=1/(1+math.exp(-(b+sum(wi*zi for wi,zi in zip(w,z)))))
        e=p-y; gb+=e
        for i in range(d): gw[i]+=e*z[i]
    n=len(Z)
    for i in range(d): w[i]-=0.5*(gw[i]/n+lam*w[i])
    b-=0.5*gb/n
# unstandardize
W=[w[i]/sd[i] for i in range(d)]; B=b-sum(w[i]*mu[i]/sd[i] for i in range(d))
print("bias",round(B,4),"weights",[round(x,4) for x in W])
def probs(X): return [1/(1+math.exp(-(B+sum(wi*xi for wi,xi in zip(W,x))))) for x in X]
def table(X,y,label):
    P=probs(X)
    print(label)
    for t in [0.2,0.3,0.35,0.4,0.45,0.5,0.55,0.6]:
        fa=sum(1 for p,yy in zip(P,y) if yy==1 and p<t)/max(1,sum(y))
        ok=sum(1 for p,yy in zip(P,y) if yy==0 and p<t)/max(1,len(y)-sum(y))
        print(f"  t={t:.2f} abstain_ok={ok:.3f} false_abstain={fa:.3f}")
table(Xt,yt,"tune"); table(Xh,yh,"held-out")
