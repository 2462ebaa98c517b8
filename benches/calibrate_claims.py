# Calibrates agents.grounding.claim_similarity: cosine of a claim (question + gold answer) to its
# gold sentence vs to the longest sentence of another paragraph of the same article.
# Run from the project root after `cargo build --release`: python3 benches/calibrate_claims.py
import json,subprocess,math,random
corp=[json.loads(l) for l in open('../shared/eval/squad-dev/corpus.jsonl')]
qs=[json.loads(l) for l in open('../shared/eval/squad-dev/questions.jsonl')]
import re
def sents(t): return [s for s in re.split(r'(?<=[.!?])\s+(?=[A-Z])',t) if len(s.split())>=4]
text={c['_id']:c['text'] for c in corp}
random.seed(3)
pos=[];neg=[]
# positive: a claim = question words + gold answer (a declarative approximation) vs the gold sentence
for q in [q for q in qs if q['answerable']][:60]:
    g=q['answers'][0]; ss=[s for s in sents(text[q['paragraph']]) if g in s]
    if not ss: continue
    claim=q['question'].rstrip('?')+' '+g+'.'
    pos.append((claim, ss[0]))
    other=random.choice([c for c in corp if c['_id'].split('/')[0]==q['paragraph'].split('/')[0] and c['_id']!=q['paragraph']])
    neg.append((claim, max(sents(other['text']) or [other['text']], key=len)))
texts=[x for p in pos+neg for x in p]
out=subprocess.run(['./target/release/groundwork','embed']+texts,capture_output=True,text=True).stdout
V=json.loads(out)
if isinstance(V,dict): V=V.get('vectors') or V.get('embeddings')
V=[v['embedding'] if isinstance(v,dict) else v for v in V]
def cos(a,b): return sum(x*y for x,y in zip(a,b))
cs=[cos(V[2*i],V[2*i+1]) for i in range(len(pos)+len(neg))]
P=sorted(cs[:len(pos)]); N=sorted(cs[len(pos):])
print(len(P),'pos quantiles',[round(P[int(q*(len(P)-1))],2) for q in (0.05,0.1,0.25,0.5)])
print(len(N),'neg quantiles',[round(N[int(q*(len(N)-1))],2) for q in (0.5,0.75,0.9,0.95)])
for t in (0.35,0.4,0.45,0.5,0.55,0.6):
    print(t,'pos kept',sum(c>=t for c in P)/len(P),'neg kept',sum(c>=t for c in N)/len(N))
